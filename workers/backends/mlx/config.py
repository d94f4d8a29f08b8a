"""Backend `mlx`, config: the spec's knobs of MLX's grouped affine quantization (`nn.quantize`)."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from workers.backends.base import Description, Modules, QuantConfig, dtype_name



class MlxConfig(QuantConfig):
    library: Literal["mlx"] = "mlx"
    renamed: ClassVar[dict[str, str]] = {"bits": "weight_bits", "dtype": "compute_dtype"}
    weight_bits: Literal[4, 8] = Field(4, description="bits of the quantized Linear and Embedding weights")
    group_size: Literal[32, 64, 128] = Field(64, description="weights per scale and bias")
    compute_dtype: Literal["fp16", "fp32"] = Field(
        "fp16", description="the unquantized weights and the compute (mlx-whisper's conversion writes fp16)")

    @classmethod
    def upgrade(cls, entry: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        out, notes = super().upgrade(entry)
        # the earlier `dtype` said float16/float32; compute_dtype says fp16/fp32 as every library's does
        out["compute_dtype"] = {"float16": "fp16", "float32": "fp32"}.get(out.get("compute_dtype"), out.get("compute_dtype"))
        if out["compute_dtype"] is None:
            del out["compute_dtype"]
        return out, notes

    @model_validator(mode="after")
    def _whole_model(self) -> MlxConfig:
        if self.modules != Modules():
            raise ValueError("modules: nn.quantize takes every Linear and Embedding of mlx-whisper's model; "
                             "it takes no module selection")
        return self

    def describe(self) -> Description:
        return Description(f"w{self.weight_bits}-g{self.group_size}", self.weight_bits, None, "per-group",
                           self.group_size, compute_dtype=dtype_name(self.compute_dtype))

    def label(self) -> str:
        return self.name or f"mlx-{self.describe().scheme}" + ("" if self.compute_dtype == "fp16" else "-fp32")
