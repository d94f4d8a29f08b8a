"""Costs metric: analytic bit operations (BOPs), memory I/O and packed size, from the model's shapes, the bits
each layer was quantized to, and the encoder windows and decoder tokens a trial actually ran (seed 003's axes).

Per Linear/Conv1d layer m with b_w weight bits, b_a activation bits and n_m positions it ran at:
  MACs_m = n_m · macs per position (in·out for Linear, out·in/groups·kernel for Conv1d)
  BOPs   = Σ_m MACs_m · b_w · b_a
  memory I/O = Σ_m reads_m · (weights_m · b_w + scales/zeros_m + bias_m · b_float) / 8
             + Σ_m n_m · (in_m + out_m) · b_a / 8
where n_m = windows · positions per window for layers that run once per window (the encoder, Whisper's
cross-attention keys/values) and tokens for those that run once per decoded token, and reads_m (how often its
weights are read, at batch 1) is windows or tokens accordingly. Attention's activation-by-activation
matmuls, embeddings and norms are left out.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from torch import nn

from workers.backends.base import Description, LayerBits, Modules, QuantizedModel, selected_linears
from workers.metrics.base import Tracker


@dataclass(frozen=True)
class Site:
    """Where a layer runs: `per_window` positions each encoder window, or one position per decoded token."""

    per_window: int = 0  # 0: the layer runs once per decoded token instead

    def positions(self, windows: int, tokens: int) -> int:
        return windows * self.per_window if self.per_window else tokens

    def reads(self, windows: int, tokens: int) -> int:
        return windows if self.per_window else tokens


def whisper_sites(model: nn.Module) -> dict[str, Site]:
    """The encoder (and the decoder's cross-attention keys/values, cached per window) run over every frame."""
    frames = model.config.max_source_positions
    sites = {}
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv1d)):
            continue
        if name.endswith("encoder.conv1"):
            sites[name] = Site(2 * frames)  # stride 1 over the 2·frames mel frames; conv2's stride 2 halves them
        elif ".encoder." in f".{name}" or fnmatch.fnmatchcase(name, "*encoder_attn.[kv]_proj"):
            sites[name] = Site(frames)
        else:
            sites[name] = Site()
    return sites


# One entry per family; issue 10's families add theirs here.
SITES: dict[str, Callable[[nn.Module], dict[str, Site]]] = {"whisper": whisper_sites}


def layer_bits(float_model: nn.Module, quantized: QuantizedModel, described: Description,
               modules: Modules) -> dict[str, LayerBits]:
    """The quantizer's own per-layer record, else the description's bits on every selected Linear."""
    if quantized.layer_bits is not None:
        return quantized.layer_bits
    if not quantized.quantized_modules or described.weight_bits is None:
        return {}
    # float activations move at the width the layers compute in
    act = described.act_bits or (32 if described.compute_dtype == "float32" else 16)
    group = described.group_size
    return {name: LayerBits(described.weight_bits, act,
                            16 * layer.out_features * (layer.in_features // group if group else 1))
            for name, layer in selected_linears(float_model, modules)}


def macs_per_position(m: nn.Module) -> int:
    if isinstance(m, nn.Conv1d):
        return m.out_channels * m.in_channels // m.groups * m.kernel_size[0]
    return m.in_features * m.out_features


def costs(float_model: nn.Module, sites: dict[str, Site], bits: dict[str, LayerBits], float_bits: int,
          windows: int, tokens: int) -> dict[str, int]:
    """bops, mem_io_bytes (analytic, see the module's docstring) over the layers in `sites`."""
    modules = dict(float_model.named_modules())
    bops = io_bits = 0
    for name, site in sites.items():
        m = modules[name]
        b = bits.get(name, LayerBits(float_bits, float_bits, 0))
        n = site.positions(windows, tokens)
        bops += n * macs_per_position(m) * b.weight_bits * b.act_bits
        bias = m.bias.numel() if m.bias is not None else 0
        io_bits += site.reads(windows, tokens) * (m.weight.numel() * b.weight_bits + b.overhead_bits + bias * float_bits)
        width_in, width_out = (m.in_channels, m.out_channels) if isinstance(m, nn.Conv1d) else (m.in_features, m.out_features)
        io_bits += n * (width_in + width_out) * b.act_bits
    return {"bops": bops, "mem_io_bytes": io_bits // 8}


def analytic_size_bytes(float_model: nn.Module, bits: dict[str, LayerBits], float_bits: int) -> int:
    """Packed size: quantized weights at their bits plus scales/zeros, every other parameter at float bits."""
    quantized = {f"{name}.weight": b for name, b in bits.items()}
    total = 0
    for name, p in float_model.named_parameters():  # tied parameters are listed once
        b = quantized.get(name)
        total += p.numel() * b.weight_bits + b.overhead_bits if b else p.numel() * float_bits
    return total // 8


def cost_columns(family: str, float_model: nn.Module, quantized: QuantizedModel, described: Description,
                 modules: Modules, windows: int, tokens: int) -> dict[str, Any]:
    # Layers the quantization left alone stay at the model's float width (16 for fp16/bf16 baselines).
    floats = [p for p in quantized.model.parameters() if p.is_floating_point()]
    float_bits = floats[0].element_size() * 8 if floats else 32
    bits = layer_bits(float_model, quantized, described, modules)
    columns: dict[str, Any] = {"analytic_size_bytes": analytic_size_bytes(float_model, bits, float_bits)}
    if family in SITES:
        columns |= costs(float_model, SITES[family](float_model), bits, float_bits, windows, tokens)
    else:
        columns["cost_null_reason"] = f"where the layers of a {family} model run per position is not described"
    return columns


class CostsTracker(Tracker):
    """Analytic figures of a torch model, from its layers and what its batch-1 pass ran."""

    name = "costs"
    null_reason = "cost_null_reason"
    columns = (
        pa.field("analytic_size_bytes", pa.int64()),  # analytic packed size: bits × params + scales/zeros
        pa.field("bops", pa.int64()),  # analytic bit operations of Linear/Conv1d layers over the batch-1 pass
        pa.field("mem_io_bytes", pa.int64()),  # analytic weight + activation bytes moved over the batch-1 pass
        pa.field("cost_null_reason", pa.string()),  # why bops / mem_io_bytes are NULL
    )

    def measure(self) -> dict[str, Any]:
        ctx = self.context
        if not isinstance(ctx.deployable, QuantizedModel):
            return {self.null_reason: f"the {ctx.runtime.name} runtime's layers are not torch modules to count"}
        q = ctx.trial.quantization
        return cost_columns(ctx.loaded.family, ctx.loaded.model, ctx.deployable, q.describe(), q.modules,
                            ctx.row.get("encoder_windows"), ctx.row.get("decoded_tokens"))


TRACKER = CostsTracker
