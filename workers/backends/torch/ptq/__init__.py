"""Quantizer `ptq`: calibrated post-training quantization in plain PyTorch (RTN, GPTQ, AWQ, SmoothQuant,
Hadamard), simulated: weights and activations are rounded to their grids but stored and computed in float32."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from workers.device import Device
from workers.backends.base import (
    Calibrate,
    Description,
    LayerBits,
    QuantConfig,
    QuantizedModel,
    Quantizer,
    count_params,
    selected_linears,
)
from workers.backends.torch.ptq.grid import Grid, fake_quant_tokens
from workers.backends.torch.ptq.gptq import gptq
from workers.backends.torch.ptq.observe import Inputs, observe
from workers.backends.torch.ptq.transforms import Transform, awq_scale, random_hadamard, smoothquant_scale

METHOD_FIELDS = {
    "damping": ("gptq", "hadamard"), "act_order": ("gptq", "hadamard"), "alpha": ("awq", "smoothquant"),
    "rounding": ("hadamard",),
}
AWQ_GRID = [i / 20 for i in range(21)]  # the α AWQ searches when none is given (the reference's 20 steps)
FLOAT_BITS = 32


class PtqConfig(QuantConfig):
    library: Literal["ptq"] = "ptq"
    method: Literal["rtn", "gptq", "awq", "smoothquant", "hadamard"] = Field(
        "rtn", description="rtn: round to nearest; gptq: Hessian error feedback; awq: activation-aware scales; "
        "smoothquant: activation outliers moved into the weights; hadamard: rotated inputs, then `rounding`")
    weight_bits: int = Field(4, ge=2, le=8, description="bits per weight, 2..8")
    act_bits: int | None = Field(
        None, ge=4, le=16, description="bits per activation at every quantized Linear's input (dynamic per token, "
        "simulated), 4..16; null keeps activations in float32")
    granularity: Literal["per-channel", "per-group"] = Field("per-group", description="one scale per output "
                                                             "channel, or per group of `group_size` inputs")
    group_size: int = Field(128, ge=8, description="inputs per scale with per-group granularity")
    symmetric: bool = Field(True, description="a zero-centred grid (scale only) or an asymmetric one (scale and zero)")
    calibration_dataset: str = Field("samples-calibration", description="dataset whose audio calibrates "
                                     "gptq, awq, smoothquant and hadamard with gptq rounding")
    calibration_utterances: int = Field(8, ge=1, description="calibration clips run through the float model")
    damping: float = Field(0.01, gt=0, le=1, description="GPTQ: share of the mean Hessian diagonal added to it")
    act_order: bool = Field(False, description="GPTQ: quantize the inputs with the largest Hessian diagonal first")
    alpha: float | None = Field(None, ge=0, le=1, description="AWQ/SmoothQuant migration strength; null: "
                                "SmoothQuant 0.5, AWQ searches 0..1 on the calibration inputs")
    rounding: Literal["rtn", "gptq"] = Field("rtn", description="hadamard: how rotated weights are rounded")

    @model_validator(mode="after")
    def _method_knobs(self) -> PtqConfig:
        for knob, methods in METHOD_FIELDS.items():
            if knob in self.model_fields_set and self.method not in methods:
                raise ValueError(f"{knob}: only for method {' or '.join(methods)}, not {self.method}")
        if "group_size" in self.model_fields_set and self.granularity == "per-channel":
            raise ValueError("group_size: only with granularity per-group")
        if self.method == "hadamard" and self.rounding == "rtn" and {"damping", "act_order"} & self.model_fields_set:
            raise ValueError("damping, act_order: only with hadamard rounding gptq")
        return self

    @property
    def grid(self) -> Grid:
        return Grid(self.weight_bits, self.group_size if self.granularity == "per-group" else None, self.symmetric)

    def uses_gptq(self) -> bool:
        return self.method == "gptq" or (self.method == "hadamard" and self.rounding == "gptq")

    def needs_calibration(self) -> bool:
        return self.method in ("gptq", "awq", "smoothquant") or self.uses_gptq()

    def describe(self) -> Description:
        scheme = f"{self.method}-w{self.weight_bits}" + (f"a{self.act_bits}" if self.act_bits else "")
        return Description(scheme, self.weight_bits, self.act_bits, self.granularity,
                           self.grid.group_size, dynamic=True if self.act_bits else None, simulated=True)

    def label(self) -> str:
        if self.name:
            return self.name
        parts = ["ptq", self.method + ("-gptq" if self.method == "hadamard" and self.rounding == "gptq" else ""),
                 f"w{self.weight_bits}" + (f"a{self.act_bits}" if self.act_bits else ""),
                 f"g{self.group_size}" if self.granularity == "per-group" else "pc"]
        if not self.symmetric:
            parts.append("asym")
        if self.act_order and self.uses_gptq():
            parts.append("ao")
        if self.alpha is not None:
            parts.append(f"a{self.alpha:g}")
        return "-".join(parts)


class PtqQuantizer(Quantizer):
    library: ClassVar[str] = "ptq"
    config_type: ClassVar[type[QuantConfig]] = PtqConfig
    config: PtqConfig

    def supports(self, device: Device) -> str | None:
        if device.hw_class == "apple" and self.config.uses_gptq():
            return "GPTQ needs float64 Cholesky factorisations, which MPS does not have"
        return None

    def quantize(self, model: nn.Module, device: Device, calibrate: Calibrate | None = None) -> QuantizedModel:
        cfg = self.config
        if cfg.needs_calibration() and calibrate is None:
            raise ValueError(f"ptq {cfg.method} is calibrated: it needs a calibrate callback")
        total = count_params(model)
        layers = dict(selected_linears(model, cfg.modules))
        stats = (observe(model, layers, calibrate, hessian=cfg.uses_gptq(), samples=cfg.method == "awq")
                 if cfg.needs_calibration() else {})
        transforms = self._transforms(layers, stats)
        grid, bits = cfg.grid, {}
        with torch.no_grad():
            for name, layer in layers.items():
                t = transforms.get(name, Transform())
                w = t.weight_in(layer.weight.float())
                try:
                    if cfg.uses_gptq():
                        # GPTQ runs on the CPU in float64 wherever the model is: its Cholesky needs it.
                        rounded = gptq(w.cpu(), t.hessian_in(stats[name].hessian), grid, cfg.damping, cfg.act_order)
                    else:
                        rounded = grid.quantize(w)
                except ValueError as exc:
                    raise ValueError(f"layer {name}: {exc}") from exc
                layer.weight.copy_(t.weight_out(rounded.to(w.device)).to(layer.weight.dtype))
                if cfg.act_bits:
                    layer.register_forward_pre_hook(_activation_rounding(t, cfg.act_bits))
                bits[name] = LayerBits(cfg.weight_bits, cfg.act_bits or FLOAT_BITS,
                                       grid.overhead_bits(layer.out_features, layer.in_features))
        params = sum(p.numel() for layer in layers.values() for p in layer.parameters())
        return QuantizedModel(model, len(layers), params, total, layer_bits=bits)

    def _transforms(self, layers: dict[str, nn.Linear], stats: dict[str, Inputs]) -> dict[str, Transform]:
        cfg = self.config
        if cfg.method == "hadamard":
            return {n: Transform(rotation=random_hadamard(l.in_features).to(l.weight.device)) for n, l in layers.items()}
        if cfg.method not in ("smoothquant", "awq"):
            return {}
        # Layers reading one LayerNorm's output share a scale, which a deployment folds into that LayerNorm;
        # layers with no LayerNorm before them (fc2 after GELU, out_proj) keep their inputs as they are.
        groups: dict[str, list[str]] = {}
        for name, s in stats.items():
            if s.producer is not None:
                groups.setdefault(s.producer, []).append(name)
        transforms = {}
        for names in groups.values():
            first = stats[names[0]]
            if cfg.method == "smoothquant":
                scale = smoothquant_scale(first.abs_max, [layers[n].weight.float() for n in names],
                                          0.5 if cfg.alpha is None else cfg.alpha)
            else:
                scale = self._awq_search([layers[n] for n in names], first)
            transforms.update({n: Transform(scale=scale.to(layers[n].weight.device)) for n in names})
        return transforms

    def _awq_search(self, group: list[nn.Linear], inputs: Inputs) -> torch.Tensor:
        """The α whose scales make the rounded group's outputs closest to the float ones on calibration inputs."""
        cfg = self.config
        x = inputs.sample().to(group[0].weight.device)
        targets = [x @ layer.weight.float().T for layer in group]
        best: tuple[float, torch.Tensor] | None = None
        for alpha in AWQ_GRID if cfg.alpha is None else [cfg.alpha]:
            t = Transform(scale=awq_scale(inputs.abs_mean.to(x.device), alpha))
            xq = t.inputs_out(fake_quant_tokens(t.inputs_in(x), cfg.act_bits)) if cfg.act_bits else x
            loss = sum(float(((xq @ t.weight_out(cfg.grid.quantize(t.weight_in(layer.weight.float()))).T - y) ** 2)
                             .sum()) for layer, y in zip(group, targets))
            if best is None or loss < best[0]:
                best = (loss, t.scale)
        return best[1]


def _activation_rounding(t: Transform, bits: int):
    """A forward pre-hook rounding a Linear's input to `bits` per token in the layer's transformed basis."""
    def hook(_: nn.Module, args: tuple) -> tuple:
        x = args[0]
        return (t.inputs_out(fake_quant_tokens(t.inputs_in(x.float()), bits)).to(x.dtype),) + args[1:]
    return hook
