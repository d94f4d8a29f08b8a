"""Backend `mlx`, config: the spec's knobs of MLX's grouped affine quantization (`nn.quantize`)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from workers.quantizers.base import Description, Modules, QuantConfig


class MlxConfig(QuantConfig):
    library: Literal["mlx"] = "mlx"
    bits: Literal[4, 8] = Field(4, description="bits of the quantized Linear and Embedding weights")
    group_size: Literal[32, 64, 128] = Field(64, description="weights per scale and bias")
    dtype: Literal["float16", "float32"] = Field(
        "float16", description="the unquantized weights and the compute (mlx-whisper's conversion writes float16)")

    @model_validator(mode="after")
    def _whole_model(self) -> MlxConfig:
        if self.modules != Modules():
            raise ValueError("modules: nn.quantize takes every Linear and Embedding of mlx-whisper's model; "
                             "it takes no module selection")
        return self

    def describe(self) -> Description:
        return Description(f"w{self.bits}-g{self.group_size}", self.bits, 16 if self.dtype == "float16" else 32,
                           "per-group", self.group_size, compute_dtype=self.dtype)

    def label(self) -> str:
        return self.name or f"mlx-{self.describe().scheme}" + ("" if self.dtype == "float16" else "-fp32")
