"""Backend `openvino`, config: the spec's knobs of NNCF's weight compression and static quantization."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from workers.quantizers.base import Description, Modules, QuantConfig

CALIBRATION_FIELDS = ("calibration_dataset", "calibration_utterances")


class OpenVinoConfig(QuantConfig):
    library: Literal["openvino"] = "openvino"
    weights: Literal["fp32", "int8", "int4"] = Field(
        "int8", description="fp32 (the converted model), or NNCF weight compression to int8 or int4")
    symmetric: bool | None = Field(None, description="weights: symmetric; default NNCF's (int8 asym, int4 sym)")
    group_size: int = Field(128, ge=-1, description="int4: weights per scale (-1: per channel)")
    ratio: float = Field(1.0, gt=0, le=1, description="int4: share of the compressed layers in int4, the rest int8")
    activations: Literal["none", "int8"] = Field(
        "none", description="int8: static int8 activations and weights (nncf.quantize, calibrated)")
    calibration_dataset: str = Field("samples-calibration", description="activations int8: the calibration split")
    calibration_utterances: int = Field(4, ge=1, description="activations int8: clips run to set the ranges")

    @model_validator(mode="after")
    def _knobs_of_the_scheme(self) -> OpenVinoConfig:
        if self.modules != Modules():
            raise ValueError("modules: openvino compresses every weight NNCF selects; it takes no module selection")
        given = self.model_fields_set
        if {"group_size", "ratio"} & given and self.weights != "int4":
            raise ValueError("group_size, ratio: only with weights int4")
        if self.activations == "int8" and (self.weights != "int8" or "symmetric" in given):
            raise ValueError("activations int8: weights are int8 (nncf.quantize picks their scales); give neither "
                             "weights other than int8 nor symmetric")
        if set(CALIBRATION_FIELDS) & given and self.activations == "none":
            raise ValueError(f"{', '.join(CALIBRATION_FIELDS)}: only with activations int8")
        if self.weights == "fp32" and "symmetric" in given:
            raise ValueError("symmetric: only with weights int8 or int4")
        return self

    def is_symmetric(self) -> bool:
        return self.symmetric if self.symmetric is not None else self.weights == "int4"

    def needs_calibration(self) -> bool:
        return self.activations == "int8"

    def describe(self) -> Description:
        if self.activations == "int8":
            return Description("w8a8", 8, 8, "per-channel", dynamic=False, compute_dtype="int8")
        if self.weights == "fp32":
            return Description("fp32", 32, 32)
        kind = "sym" if self.is_symmetric() else "asym"
        if self.weights == "int8":
            return Description(f"int8-{kind}", 8, 32, "per-channel")
        grouped = self.group_size > 0
        ratio = "" if self.ratio == 1 else f"-r{self.ratio:g}"
        return Description(f"int4-{kind}-g{self.group_size}{ratio}", 4, 32,
                           "per-group" if grouped else "per-channel", self.group_size if grouped else None)

    def label(self) -> str:
        return self.name or f"ov-{self.describe().scheme}"
