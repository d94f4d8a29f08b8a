"""PTQ room, the grid: round-to-nearest onto an integer grid per channel or per group (simulated in float)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

SCALE_BITS = 16  # a deployment stores each scale (and zero point) as fp16


@dataclass(frozen=True)
class Grid:
    """An integer grid for weights: `bits`, groups of `group_size` inputs (None: one per output channel)."""

    bits: int
    group_size: int | None
    symmetric: bool

    def params(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero) for each row of `w` (rows are output channels, columns the inputs of one group)."""
        if self.symmetric:
            qmax = 2 ** (self.bits - 1) - 1
            scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / qmax
            return scale, torch.zeros_like(scale)
        qmax = 2**self.bits - 1
        low, high = w.amin(dim=1, keepdim=True).clamp(max=0), w.amax(dim=1, keepdim=True).clamp(min=0)
        scale = ((high - low) / qmax).clamp(min=1e-8)
        return scale, torch.round(-low / scale)

    def round(self, w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """`w` rounded to the grid and mapped back to float (what the packed integers dequantize to)."""
        if self.symmetric:
            qmax = 2 ** (self.bits - 1) - 1
            return torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale
        q = torch.clamp(torch.round(w / scale) + zero, 0, 2**self.bits - 1)
        return (q - zero) * scale

    def quantize(self, w: torch.Tensor, clip: torch.Tensor | None = None) -> torch.Tensor:
        """Round-to-nearest of a whole (out, in) weight, group by group along the inputs; `clip` (out, groups),
        where given, bounds each group's values to ±clip first (AWQ's clipping), which narrows its grid."""
        out_features, in_features = w.shape
        grouped = w.reshape(out_features * self.groups(in_features), -1)
        if clip is not None:
            bound = clip.reshape(-1, 1)
            grouped = torch.minimum(torch.maximum(grouped, -bound), bound)
        scale, zero = self.params(grouped)
        return self.round(grouped, scale, zero).reshape(out_features, in_features)

    def groups(self, in_features: int) -> int:
        """Groups per output channel; ValueError where the group size does not divide the inputs."""
        group = self.group_size or in_features
        if in_features % group:
            raise ValueError(f"group_size {group} does not divide the layer's {in_features} inputs")
        return in_features // group

    def overhead_bits(self, out_features: int, in_features: int) -> int:
        """Bits of the scales (and zero points when asymmetric) a packed layer stores."""
        return out_features * self.groups(in_features) * SCALE_BITS * (1 if self.symmetric else 2)


def fake_quant_tokens(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Dynamic symmetric per-token quantization of activations, mapped back to float."""
    qmax = 2 ** (bits - 1) - 1
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / qmax
    return torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale
