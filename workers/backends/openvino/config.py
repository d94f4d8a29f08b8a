"""Backend `openvino`, config: the spec's knobs of NNCF's weight compression and static quantization."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from workers.backends.base import Description, Modules, QuantConfig

CALIBRATION_FIELDS = ("calibration_dataset", "calibration_utterances")


class OpenVinoConfig(QuantConfig):
    library: Literal["openvino"] = "openvino"

    @classmethod
    def upgrade(cls, entry: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Earlier spellings: `weights: fp32|int8|int4` and `activations: none|int8`."""
        out, notes = super().upgrade(entry)
        if "weights" in out:
            weights = out.pop("weights")
            out.setdefault("weight_bits", None if weights == "fp32" else int(str(weights).removeprefix("int")))
            notes.append(f"weights: deprecated, write weight_bits: {out['weight_bits']}")
        if "activations" in out:
            if out.pop("activations") == "int8":
                out.setdefault("act_bits", 8)
            notes.append("activations: deprecated, write act_bits: 8 (or leave it out)")
        return out, notes
    weight_bits: Literal[8, 4] | None = Field(
        8, description="NNCF weight compression to 8 or 4 bits; null: the converted model, uncompressed (fp32)")
    symmetric: bool | None = Field(None, description="weights: symmetric; default NNCF's (8 bits asym, 4 bits sym)")
    group_size: int = Field(128, ge=-1, description="4 bits: weights per scale (-1: per channel)")
    ratio: float = Field(1.0, gt=0, le=1, description="4 bits: share of the compressed layers in 4 bits, the rest 8")
    act_bits: Literal[8] | None = Field(
        None, description="8: static int8 activations and weights (nncf.quantize, calibrated); absent: weight-only")
    calibration_dataset: str = Field("samples-calibration", description="act_bits 8: the calibration split")
    calibration_utterances: int = Field(4, ge=1, description="act_bits 8: clips run to set the ranges")

    @model_validator(mode="after")
    def _knobs_of_the_scheme(self) -> OpenVinoConfig:
        if self.modules != Modules():
            raise ValueError("modules: openvino compresses every weight NNCF selects; it takes no module selection")
        given = self.model_fields_set
        if {"group_size", "ratio"} & given and self.weight_bits != 4:
            raise ValueError("group_size, ratio: only with weight_bits 4")
        if self.act_bits and (self.weight_bits != 8 or "symmetric" in given):
            raise ValueError("act_bits 8: weights are int8 (nncf.quantize picks their scales); give neither "
                             "weight_bits other than 8 nor symmetric")
        if set(CALIBRATION_FIELDS) & given and not self.act_bits:
            raise ValueError(f"{', '.join(CALIBRATION_FIELDS)}: only with act_bits 8")
        if self.weight_bits is None and "symmetric" in given:
            raise ValueError("symmetric: only with weight_bits 8 or 4")
        return self

    def is_symmetric(self) -> bool:
        return self.symmetric if self.symmetric is not None else self.weight_bits == 4

    def needs_calibration(self) -> bool:
        return self.act_bits is not None

    def describe(self) -> Description:
        if self.act_bits:
            return Description("w8a8", 8, 8, "per-channel", dynamic=False, compute_dtype="int8")
        if self.weight_bits is None:
            return Description("fp32", 32)
        kind = "sym" if self.is_symmetric() else "asym"
        if self.weight_bits == 8:
            return Description(f"int8-{kind}", 8, None, "per-channel")
        grouped = self.group_size > 0
        ratio = "" if self.ratio == 1 else f"-r{self.ratio:g}"
        return Description(f"int4-{kind}-g{self.group_size}{ratio}", 4, None,
                           "per-group" if grouped else "per-channel", self.group_size if grouped else None)

    def label(self) -> str:
        return self.name or f"ov-{self.describe().scheme}"
