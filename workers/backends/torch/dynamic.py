"""Quantizer `torch`: PyTorch's own dynamic int8 (torch.ao quantize_dynamic), per-tensor, CPU only."""
from __future__ import annotations

import warnings
from typing import ClassVar, Literal

import torch
from pydantic import Field
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


class TorchConfig(QuantConfig):
    library: Literal["torch"] = "torch"
    renamed: ClassVar[dict[str, str]] = {"scheme": "format"}
    format: Literal["dynamic-int8"] = Field("dynamic-int8", description="int8 weights and run-time int8 activations")

    def describe(self) -> Description:
        return Description(self.format, 8, 8, "per-tensor", dynamic=True)


class TorchQuantizer(Quantizer):
    library: ClassVar[str] = "torch"
    config_type: ClassVar[type[QuantConfig]] = TorchConfig

    def supports(self, device: Device) -> str | None:
        if not device.is_cpu:
            return f"torch.ao dynamic int8 has CPU kernels only (device {device.torch_device})"
        if not set(torch.backends.quantized.supported_engines) & {"x86", "fbgemm", "qnnpack"}:
            return "this torch build has no quantized engine"
        return None

    def quantize(self, model: nn.Module, device: Device, calibrate: Calibrate | None = None) -> QuantizedModel:
        total = count_params(model)
        chosen = list(selected_linears(model, self.config.modules))
        with warnings.catch_warnings():
            # torch.ao.quantization is deprecated in favour of torchao; the API still runs.
            warnings.simplefilter("ignore", DeprecationWarning)
            quantized = torch.ao.quantization.quantize_dynamic(
                model, {name for name, _ in chosen}, dtype=torch.qint8, inplace=True
            )
        params = sum(p.numel() for _, layer in chosen for p in layer.parameters())
        return QuantizedModel(quantized, len(chosen), params, total)
