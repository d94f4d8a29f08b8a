"""Quantizer `quanto`: optimum-quanto int8/int4/int2/float8 weights, optionally static int8/float8 activations."""
from __future__ import annotations

from typing import ClassVar, Literal

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

WEIGHT_BITS = {"int8": 8, "int4": 4, "int2": 2, "float8": 8}
SHORT = {"int8": "8", "int4": "4", "int2": "2", "float8": "f8"}
# quanto groups int4/int2 weights by 128 where the input width allows (else 96, 64, 32, or per-channel).
QUANTO_GROUP_SIZE = 128
CALIBRATION_FIELDS = ("calibration_dataset", "calibration_utterances")


class QuantoConfig(QuantConfig):
    library: Literal["quanto"] = "quanto"
    weights: Literal["int8", "int4", "int2", "float8"] = Field(
        "int8", description="weight type: int8, int4, int2 or float8 (e4m3)"
    )
    activations: Literal["none", "int8", "float8"] = Field(
        "none", description="activation type: none (weight-only), int8 or float8; static scales from calibration"
    )
    calibration_dataset: str = Field(
        "samples-calibration", description="dataset whose audio sets the activation scales (with activations only)"
    )
    calibration_utterances: int = Field(
        8, ge=1, description="utterances run through the model to set activation scales (with activations only)"
    )

    @model_validator(mode="after")
    def _calibration_needs_activations(self) -> QuantoConfig:
        misplaced = [f for f in CALIBRATION_FIELDS if f in self.model_fields_set]
        if misplaced and self.activations == "none":
            raise ValueError(f"{', '.join(misplaced)}: only when activations are quantized, not with activations none")
        return self

    def describe(self) -> Description:
        scheme = f"w{SHORT[self.weights]}"
        grouped = self.weights in ("int4", "int2")
        weight_only = self.activations == "none"
        return Description(
            scheme if weight_only else f"{scheme}a{SHORT[self.activations]}",
            WEIGHT_BITS[self.weights],
            32 if weight_only else 8,  # weight-only layers compute in the model's float32
            "per-group" if grouped else "per-channel",
            QUANTO_GROUP_SIZE if grouped else None,
            dynamic=None if weight_only else False,
        )

    def needs_calibration(self) -> bool:
        return self.activations != "none"

    def label(self) -> str:
        return self.name or f"quanto-{self.describe().scheme}"


class QuantoQuantizer(Quantizer):
    library: ClassVar[str] = "quanto"
    config_type: ClassVar[type[QuantConfig]] = QuantoConfig
    package: ClassVar[str | None] = "optimum.quanto"
    config: QuantoConfig

    def supports(self, device: Device) -> str | None:
        if device.hw_class == "apple" and "float8" in (self.config.weights, self.config.activations):
            return "MPS has no float8 dtypes, so quanto cannot hold float8 weights or activations there"
        return None

    def quantize(self, model: nn.Module, device: Device, calibrate: Calibrate | None = None) -> QuantizedModel:
        from optimum.quanto import Calibration, QModuleMixin, freeze, quantize

        cfg = self.config
        if cfg.needs_calibration() and calibrate is None:
            raise ValueError(f"quanto with {cfg.activations} activations is static: it needs a calibrate callback")
        total = count_params(model)
        chosen = dict(selected_linears(model, cfg.modules))
        params = sum(p.numel() for layer in chosen.values() for p in layer.parameters())
        # Exact names, not the spec's patterns: quanto matches every module kind it has a quantized version of.
        # With activations the selected LayerNorms are quantized too, as the library's own
        # `quantize(model, weights=..., activations=...)` does: a QLayerNorm hands quantized activations on
        # to the next layer instead of floats.
        norms = [name for name, m in model.named_modules()
                 if isinstance(m, nn.LayerNorm) and cfg.modules.selects(name)] if cfg.needs_calibration() else []
        quantize(
            model,
            weights=f"q{cfg.weights}",
            activations=None if cfg.activations == "none" else f"q{cfg.activations}",
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
