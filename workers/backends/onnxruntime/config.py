"""Backend `onnxruntime`, config: the spec's knobs of ONNX Runtime's quantization tools."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from workers.backends.base import Description, Modules, QuantConfig

# MatMulNBits' accuracy_level: what the activations are computed in (0: the op's default, here fp32).
ACCURACY_COMPUTE = {0: "float32", 1: "float32", 2: "float16", 3: "bfloat16", 4: "int8"}
CALIBRATION_FIELDS = ("calibration_dataset", "calibration_utterances")


class OnnxRuntimeConfig(QuantConfig):
    library: Literal["onnxruntime"] = "onnxruntime"
    renamed: ClassVar[dict[str, str]] = {"scheme": "format"}
    format: Literal["fp32", "dynamic-int8", "static-int8", "weight-only"] = Field(
        "dynamic-int8", description="fp32 (the export unquantized); dynamic-int8 (quantize_dynamic); static-int8 "
        "(quantize_static, QDQ, calibrated); weight-only (MatMulNBits, weight_bits 4 or 8)")
    weight_bits: Literal[4, 8] = Field(4, description="weight-only: bits of the MatMulNBits weights")
    group_size: int = Field(32, ge=16, description="weight-only: weights per scale (block_size), a power of 2")
    symmetric: bool = Field(True, description="weight-only: symmetric blocks (no zero points)")
    accuracy_level: Literal[0, 1, 2, 3, 4] = Field(
        4, description="weight-only: MatMulNBits' compute type of the activations (0 default/fp32, 1 fp32, 2 fp16, "
        "3 bf16, 4 int8)")
    per_channel: bool = Field(True, description="dynamic/static int8: one weight scale per output channel")
    reduce_range: bool | None = Field(
        None, description="dynamic/static int8: 7-bit weights; default decided by the CPU's ISA (x86 without VNNI: "
        "true, against the u8s8 saturation ONNX Runtime documents; VNNI, AMX or Arm: false)")
    calibration_dataset: str = Field("samples-calibration", description="static-int8: the calibration split")
    calibration_utterances: int = Field(4, ge=1, description="static-int8: clips run to set the activation ranges")

    @model_validator(mode="after")
    def _knobs_of_the_scheme(self) -> OnnxRuntimeConfig:
        if self.modules != Modules():
            raise ValueError("modules: onnxruntime quantizes every MatMul of the export; it takes no module selection")
        given = self.model_fields_set
        weight_only = {"weight_bits", "group_size", "symmetric", "accuracy_level"} & given
        if weight_only and self.format != "weight-only":
            raise ValueError(f"{', '.join(sorted(weight_only))}: only with format weight-only")
        if {"per_channel", "reduce_range"} & given and self.format not in ("dynamic-int8", "static-int8"):
            raise ValueError("per_channel, reduce_range: only with format dynamic-int8 or static-int8")
        if set(CALIBRATION_FIELDS) & given and self.format != "static-int8":
            raise ValueError(f"{', '.join(CALIBRATION_FIELDS)}: only with format static-int8")
        if self.group_size & (self.group_size - 1):
            raise ValueError(f"group_size: {self.group_size} is not a power of 2 (MatMulNBits' block_size)")
        return self

    def needs_calibration(self) -> bool:
        return self.format == "static-int8"

    def describe(self) -> Description:
        if self.format == "fp32":
            return Description("fp32", 32)
        if self.format == "weight-only":
            int8_compute = self.accuracy_level == 4
            return Description(f"w{self.weight_bits}-g{self.group_size}{'' if self.symmetric else '-asym'}"
                               f"-acc{self.accuracy_level}", self.weight_bits, 8 if int8_compute else None,
                               "per-group", self.group_size, dynamic=True if int8_compute else None,
                               compute_dtype=ACCURACY_COMPUTE[self.accuracy_level])
        return Description(self.format, 8, 8, "per-channel" if self.per_channel else "per-tensor",
                           dynamic=self.format == "dynamic-int8", compute_dtype="int8")

    def label(self) -> str:
        return self.name or f"ort-{self.describe().scheme}"
