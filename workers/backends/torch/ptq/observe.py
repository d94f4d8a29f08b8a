"""PTQ room, calibration: what each selected Linear sees of the calibration audio (Hessian, ranges, samples)."""
from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

SAMPLE_ROWS = 512  # input rows kept per layer for AWQ's search (a deterministic stride over what it saw)


@dataclass
class Inputs:
    """Statistics of one layer's inputs over calibration; rows are tokens (or frames), columns features."""

    hessian: torch.Tensor | None  # Σ x xᵀ (float64), only when GPTQ needs it
    rows: int = 0
    abs_max: torch.Tensor | None = None
    abs_sum: torch.Tensor | None = None
    samples: list[torch.Tensor] = field(default_factory=list)
    producer: str | None = None  # the LayerNorm whose output this layer reads, where one does

    @property
    def abs_mean(self) -> torch.Tensor:
        return self.abs_sum / max(self.rows, 1)

    def sample(self) -> torch.Tensor:
        rows = torch.cat(self.samples)
        stride = max(1, len(rows) // SAMPLE_ROWS)
        return rows[::stride][:SAMPLE_ROWS]


def observe(model: nn.Module, layers: dict[str, nn.Linear], calibrate: Callable[[nn.Module], None],
            hessian: bool, samples: bool) -> dict[str, Inputs]:
    """Run `calibrate` once with hooks on `layers` (and on every LayerNorm, to know who feeds whom)."""
    stats = {name: Inputs(torch.zeros(l.in_features, l.in_features, dtype=torch.float64) if hessian else None)
             for name, l in layers.items()}
    norm_outputs: dict[int, tuple[weakref.ref, str]] = {}

    def after_norm(name: str) -> Callable:
        def hook(_: nn.Module, __: tuple, out: torch.Tensor) -> None:
            norm_outputs[id(out)] = (weakref.ref(out), name)
        return hook

    def before_linear(name: str) -> Callable:
        def hook(_: nn.Module, args: tuple) -> None:
            x = args[0]
            known = norm_outputs.get(id(x))
            if known and known[0]() is x:
                stats[name].producer = known[1]
            rows = x.detach().reshape(-1, x.shape[-1]).float()
            s = stats[name]
            s.rows += len(rows)
            if s.hessian is not None:
                s.hessian += (rows.T @ rows).double()  # a product in float32, summed over calls in float64
            amax, asum = rows.abs().amax(dim=0), rows.abs().sum(dim=0)
            s.abs_max = amax if s.abs_max is None else torch.maximum(s.abs_max, amax)
            s.abs_sum = asum if s.abs_sum is None else s.abs_sum + asum
            if samples:
                s.samples.append(rows[:: max(1, len(rows) // 64)].cpu())
        return hook

    hooks = [m.register_forward_hook(after_norm(n)) for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)]
    hooks += [layer.register_forward_pre_hook(before_linear(n)) for n, layer in layers.items()]
    try:
        with torch.no_grad():
            calibrate(model)
    finally:
        for hook in hooks:
            hook.remove()
    unseen = [n for n, s in stats.items() if not s.rows]
    if unseen:
        raise ValueError(f"calibration never reached {len(unseen)} selected layers, e.g. {unseen[0]}")
    return stats


BLOCK_NAME = re.compile(r"^(.*?\.\d+)\.")  # the first numbered module on a layer's path: model.encoder.layers.3


def blocks(model: nn.Module, layers: dict[str, nn.Linear]) -> list[tuple[nn.Module | None, list[str]]]:
    """The selected layers grouped by the numbered block that holds them, in the model's order (for an encoder-
    decoder, the order a forward runs them); layers in no block come last, together, with no block to stop after."""
    grouped: dict[str | None, list[str]] = {}
    for name in layers:
        match = BLOCK_NAME.match(name)
        grouped.setdefault(match[1] if match else None, []).append(name)
    loose = grouped.pop(None, [])
    return [(model.get_submodule(prefix), names) for prefix, names in grouped.items()] + ([(None, loose)] if loose else [])


def decoder_prefix(model: nn.Module) -> str | None:
    """`model.decoder.` (the decoder's path, with its dot) of an encoder-decoder model; None for the others
    (transformers' `get_decoder` hands an encoder-only CTC model its encoder)."""
    if not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return None
    decoder = model.get_decoder()
    return next((f"{name}." for name, module in model.named_modules() if module is decoder and name), None)
