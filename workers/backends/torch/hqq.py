"""Quantizer `hqq`: Half-Quadratic Quantization, calibration-free, each selected linear becomes an `HQQLinear`."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator
from torch import nn

from workers.device import Device
from workers.backends.base import Calibrate, Description, QuantConfig, QuantizedModel, Quantizer, replace_linears
from workers.backends.base import dtype_name
from workers.backends.torch.none import DTYPES


class HqqConfig(QuantConfig):
    library: Literal["hqq"] = "hqq"
    # hqq also accepts 5, 6 and 1.58 bits but stores them unpacked in 8 bits: no smaller than 8.
    weight_bits: Literal[1, 2, 3, 4, 8] = Field(4, description="bits per weight: 1, 2, 3, 4 or 8")
    group_size: int | None = Field(
        64,
        description="weights per scale/zero pair, a multiple of 8; null means one group per output channel",
    )
    axis: Literal[0, 1] = Field(1, description="axis the groups run along: 1 (input features, default) or 0")
    compute_dtype: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="dtype of dequantized weights and the matmul: fp32, fp16 or bf16"
    )

    @field_validator("group_size")
    @classmethod
    def _multiple_of_8(cls, group: int | None) -> int | None:
        if group is not None and (group <= 0 or group % 8):
            raise ValueError(f"must be a positive multiple of 8 (hqq's requirement) or null, got {group}")
        return group

    def describe(self) -> Description:
        granularity = "per-channel" if self.group_size is None else "per-group"
        return Description(f"w{self.weight_bits}", self.weight_bits, None, granularity,
                           self.group_size, compute_dtype=dtype_name(self.compute_dtype))

    def label(self) -> str:
        if self.name:
            return self.name
        parts = ["hqq", f"w{self.weight_bits}", "pc" if self.group_size is None else f"g{self.group_size}"]
        if self.axis != 1:
            parts.append(f"ax{self.axis}")
        if self.compute_dtype != "fp32":
            parts.append(self.compute_dtype)
        return "-".join(parts)


class HqqQuantizer(Quantizer):
    library: ClassVar[str] = "hqq"
    config_type: ClassVar[type[QuantConfig]] = HqqConfig
    package: ClassVar[str | None] = "hqq"
    config: HqqConfig

    def supports(self, device: Device) -> str | None:
        # hqq's PyTorch backend (unpack, dequantize, torch.matmul) runs on every device torch runs on;
        # its faster backends (hqq_aten, gemlite, marlin, bitblas) are CUDA-only extras, not used here.
        return None

    def quantize(self, model: nn.Module, device: Device, calibrate: Calibrate | None = None) -> QuantizedModel:
        from hqq.core.quantize import BaseQuantizeConfig, HQQBackend, HQQLinear

        # The backend is a class-wide switch in hqq; pin the portable one so an earlier import
        # elsewhere in the process cannot leave it on a CUDA-only path.
        HQQLinear.set_backend(HQQBackend.PYTORCH)
        quant_config = BaseQuantizeConfig(nbits=self.config.weight_bits, group_size=self.config.group_size, axis=self.config.axis)
        compute_dtype = DTYPES[self.config.compute_dtype]

        def make(name: str, layer: nn.Linear) -> nn.Module:
            return HQQLinear(layer, quant_config, compute_dtype=compute_dtype, device=device.torch_device)

        return replace_linears(model, self.config.modules, make)
