"""Quantizer `none`: the unquantized baselines (fp32, fp16, bf16) every other row is compared with."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch

from workers.backends.base import Calibrate, Description, QuantConfig, QuantizedModel, Quantizer, count_params, dtype_name
from workers.device import Device

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BITS = {"fp32": 32, "fp16": 16, "bf16": 16}


class NoneConfig(QuantConfig):
    library: Literal["none"] = "none"
    renamed: ClassVar[dict[str, str]] = {"dtype": "format"}
    format: Literal["fp32", "fp16", "bf16"] = "fp32"

    def describe(self) -> Description:
        return Description(self.format, BITS[self.format], compute_dtype=dtype_name(self.format))

    def label(self) -> str:
        return self.name or self.format


class NoneQuantizer(Quantizer):
    library: ClassVar[str] = "none"
    config_type: ClassVar[type[QuantConfig]] = NoneConfig
    config: NoneConfig

    def quantize(self, model: torch.nn.Module, device: Device, calibrate: Calibrate | None = None) -> QuantizedModel:
        model.to(DTYPES[self.config.format])
        return QuantizedModel(model, 0, 0, count_params(model))
