"""Quantizer `quanto`: optimum-quanto int8/int4/int2/float8 weights, optionally static int8/float8 activations."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from workers.device import Device
from workers.backends.base import (
    Calibrate,
    Description,
    QuantConfig,
    QuantizedModel,
    Quantizer,
    count_params,
    selected_linears,
)

# quanto groups int4/int2 weights by 128 where the input width allows (else 96, 64, 32, or per-channel).
QUANTO_GROUP_SIZE = 128
CALIBRATION_FIELDS = ("calibration_dataset", "calibration_utterances")


class QuantoConfig(QuantConfig):
    library: Literal["quanto"] = "quanto"
    weight_bits: Literal[2, 4, 8] = Field(8, description="bits per weight: 8, 4 or 2 (8 with format float8)")
    act_bits: Literal[8] | None = Field(
        None, description="8: activations quantized too, with static scales from calibration; absent: weight-only"
    )
    format: Literal["int", "float8"] = Field(
        "int", description="the weights' type: int (weight_bits wide) or float8 (e4m3, 8 bits)"
    )
    act_format: Literal["int", "float8"] = Field(
        "int", description="with act_bits: the activations' type, int8 or float8 (e4m3)"
    )
    calibration_dataset: str = Field(
        "samples-calibration", description="dataset whose audio sets the activation scales (with act_bits only)"
    )
    calibration_utterances: int = Field(
        8, ge=1, description="utterances run through the model to set activation scales (with act_bits only)"
    )

    @classmethod
    def upgrade(cls, entry: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Earlier spellings: `weights: int8|int4|int2|float8` and `activations: none|int8|float8`."""
        out, notes = super().upgrade(entry)
        weights, activations = out.pop("weights", None), out.pop("activations", None)
        for field, value, allowed in (("weights", weights, ("int8", "int4", "int2", "float8")),
                                      ("activations", activations, ("none", "int8", "float8"))):
            if value is not None and value not in allowed:
                names = [repr(a) for a in allowed]
                raise ValueError(f"{field}: {value!r} is not {', '.join(names[:-1])} or {names[-1]}")
        if weights is not None:
            out.setdefault("weight_bits", 8 if weights == "float8" else int(weights.removeprefix("int")))
            new = f"weight_bits: {out['weight_bits']}" + (", format: float8" if weights == "float8" else "")
            if weights == "float8":
                out.setdefault("format", "float8")
            notes.append(f"weights: deprecated, write {new}")
        if activations not in (None, "none"):
            out.setdefault("act_bits", 8)
            if activations == "float8":
                out.setdefault("act_format", "float8")
            notes.append("activations: deprecated, write act_bits: 8"
                         + (", act_format: float8" if activations == "float8" else ""))
        return out, notes

    @model_validator(mode="after")
    def _consistent(self) -> QuantoConfig:
        misplaced = [f for f in CALIBRATION_FIELDS if f in self.model_fields_set]
        if misplaced and self.act_bits is None:
            raise ValueError(f"{', '.join(misplaced)}: only when activations are quantized (act_bits: 8)")
        if self.format == "float8" and self.weight_bits != 8:
            raise ValueError(f"weight_bits: float8 weights are 8 bits, not {self.weight_bits}")
        if "act_format" in self.model_fields_set and self.act_bits is None:
            raise ValueError("act_format: only when activations are quantized (act_bits: 8)")
        return self

    def qtypes(self) -> tuple[str, str | None]:
        """quanto's names of the weights' and the activations' types (qint8, qint4, qint2, qfloat8; None)."""
        weights = "qfloat8" if self.format == "float8" else f"qint{self.weight_bits}"
        activations = None if self.act_bits is None else "qfloat8" if self.act_format == "float8" else "qint8"
        return weights, activations

    def describe(self) -> Description:
        short = "f8" if self.format == "float8" else str(self.weight_bits)
        grouped = self.weight_bits in (4, 2)
        act = "" if self.act_bits is None else "af8" if self.act_format == "float8" else "a8"
        return Description(
            f"w{short}{act}", self.weight_bits,
            self.act_bits,  # weight-only layers compute in the model's float32
            "per-group" if grouped else "per-channel",
            QUANTO_GROUP_SIZE if grouped else None,
            dynamic=None if self.act_bits is None else False,
        )

    def needs_calibration(self) -> bool:
        return self.act_bits is not None

    def label(self) -> str:
        return self.name or f"quanto-{self.describe().scheme}"


class QuantoQuantizer(Quantizer):
    library: ClassVar[str] = "quanto"
    config_type: ClassVar[type[QuantConfig]] = QuantoConfig
    package: ClassVar[str | None] = "optimum.quanto"
    config: QuantoConfig

    def supports(self, device: Device) -> str | None:
        if device.hw_class == "apple" and "qfloat8" in self.config.qtypes():
            return "MPS has no float8 dtypes, so quanto cannot hold float8 weights or activations there"
        return None

    def quantize(self, model: nn.Module, device: Device, calibrate: Calibrate | None = None) -> QuantizedModel:
        from optimum.quanto import Calibration, QModuleMixin, freeze, quantize

        cfg = self.config
        if cfg.needs_calibration() and calibrate is None:
            raise ValueError("quanto with quantized activations is static: it needs a calibrate callback")
        total = count_params(model)
        chosen = dict(selected_linears(model, cfg.modules))
        params = sum(p.numel() for layer in chosen.values() for p in layer.parameters())
        # Exact names, not the spec's patterns: quanto matches every module kind it has a quantized version of.
        # With activations the selected LayerNorms are quantized too, as the library's own
        # `quantize(model, weights=..., activations=...)` does: a QLayerNorm hands quantized activations on
        # to the next layer instead of floats (tests/test_quantizers.py: the same modules, scales and
        # transcripts as that call). Speed: int8 activations send every Linear through quanto's int8 x int8
        # kernel, `torch._int_mm`; on a CPU without VNNI/AMX (AVX2-only x86) that runs 25-60x slower than
        # the float32 matmul (a 1500x384 @ 384x1536 product: 3.4-9 s against 0.13-0.34 s on 2 busy cores), so
        # the 30 s encoder window makes w8a8 far slower than fp32 there (one demo run: RTF 13.5 against 0.34).
        # It is the library's own speed: called directly it is as slow (82% of its encoder time in
        # aten::_int_mm; benchmarks/library_overhead.py).
        norms = [name for name, m in model.named_modules()
                 if isinstance(m, nn.LayerNorm) and cfg.modules.selects(name)] if cfg.needs_calibration() else []
        quantize(
            model,
            weights=cfg.qtypes()[0],
            activations=cfg.qtypes()[1],
            include=list(chosen) + norms,
        )
        # no_grad, not inference_mode, here and wherever the model runs: a forward of frozen int4 weights
        # under torch.inference_mode() fails with "Cannot set version_counter for inference tensor".
        with torch.no_grad():
            if cfg.needs_calibration():
                with Calibration():
                    calibrate(model)
            freeze(model)
        quantized = sum(isinstance(model.get_submodule(name), QModuleMixin) for name in chosen)
        return QuantizedModel(model, quantized, params, total)
