"""Quantizer `torchao`: PyTorch's torchao tensor subclasses (int8 weight-only, int8 dynamic, int4 weight-only)."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
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

# torchao 0.18 runs int4 weight-only on the CPU only through its prototype Int4OpaqueTensor
# (aten._weight_int4pack_mm_for_cpu), which accepts these group sizes.
CPU_INT4_GROUP_SIZES = (32, 64, 128)


class TorchaoConfig(QuantConfig):
    library: Literal["torchao"] = "torchao"
    renamed: ClassVar[dict[str, str]] = {"scheme": "format"}
    format: Literal["int8-weight-only", "int8-dynamic", "int4-weight-only"] = Field(
        "int8-weight-only",
        description="int8-weight-only: int8 per-channel weights, float activations; int8-dynamic: int8 per-token "
        "activations quantized at run time and int8 per-channel weights; int4-weight-only: int4 per-group weights",
    )
    group_size: Literal[32, 64, 128, 256] = Field(
        128, description="int4-weight-only only: weights per scale, 32, 64, 128 or 256"
    )

    @model_validator(mode="after")
    def _group_only_for_int4(self) -> TorchaoConfig:
        if "group_size" in self.model_fields_set and self.format != "int4-weight-only":
            raise ValueError(f"group_size: only for int4-weight-only; {self.format} is per-channel")
        return self

    def describe(self) -> Description:
        if self.format == "int4-weight-only":
            return Description(self.format, 4, None, "per-group", self.group_size)
        # Weight-only schemes compute in the model's float32.
        dynamic = self.format == "int8-dynamic"
        return Description(self.format, 8, 8 if dynamic else None, "per-channel", dynamic=dynamic or None)

    def label(self) -> str:
        if self.name:
            return self.name
        return {
            "int8-weight-only": "torchao-w8",
            "int8-dynamic": "torchao-w8a8-dyn",
            "int4-weight-only": f"torchao-w4-g{self.group_size}",
        }[self.format]


@contextmanager
def _quiet_torchao_import() -> Iterator[None]:
    """Importing torchao logs a warning per optional CUDA extension it cannot load, and torch's pytree
    one per deprecated enum registration; on a CPU node both are noise."""
    logs = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


class TorchaoQuantizer(Quantizer):
    library: ClassVar[str] = "torchao"
    config_type: ClassVar[type[QuantConfig]] = TorchaoConfig
    package: ClassVar[str | None] = "torchao"
    config: TorchaoConfig

    def supports(self, device: Device) -> str | None:
        scheme = self.config.format
        if device.hw_class == "apple":
            if scheme == "int8-dynamic":
                return "torchao 0.18 has no MPS path for int8-dynamic: its int8 matmul targets CUDA and the CPU"
            if scheme == "int4-weight-only":
                return "torchao 0.18 int4 weight-only layouts are CUDA (tinygemm, mslk) or CPU (prototype opaque) only"
        if device.is_cpu and scheme == "int4-weight-only" and self.config.group_size not in CPU_INT4_GROUP_SIZES:
            return f"torchao's CPU int4 layout takes group_size {CPU_INT4_GROUP_SIZES}, not {self.config.group_size}"
        return None

    def quantize(self, model: nn.Module, device: Device, calibrate: Calibrate | None = None) -> QuantizedModel:
        with _quiet_torchao_import():
            from torchao.quantization import quantize_
            from torchao.utils import TorchAOBaseTensor

            ao_config = self._ao_config(device)

        total = count_params(model)
        chosen = dict(selected_linears(model, self.config.modules))
        params = sum(p.numel() for layer in chosen.values() for p in layer.parameters())
        if self.config.format == "int4-weight-only" and not device.is_cpu:
            # The CUDA tinygemm layout packs bfloat16 weights only (and needs compute capability 8.0+);
            # its linear casts activations to bfloat16 and the result back to the caller's dtype.
            for layer in chosen.values():
                layer.to(torch.bfloat16)
        quantize_(model, ao_config, filter_fn=lambda _, name: name in chosen)
        # torchao skips (and only logs at INFO) layers whose width its layout cannot take; count what changed.
        quantized = sum(isinstance(layer.weight, TorchAOBaseTensor) for layer in chosen.values())
        return QuantizedModel(model, quantized, params, total)

    def _ao_config(self, device: Device) -> object:
        from torchao.quantization import (
            Int4WeightOnlyConfig,
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
        )

        # set_inductor_config=False: nothing here is torch.compile'd, so leave the process-wide inductor settings alone.
        scheme = self.config.format
        if scheme == "int8-weight-only":
            return Int8WeightOnlyConfig(set_inductor_config=False)
        if scheme == "int8-dynamic":
            return Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)
        if device.is_cpu:
            from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

            return PrototypeInt4WeightOnlyConfig(group_size=self.config.group_size, set_inductor_config=False)
        from torchao.quantization.quantize_.workflows import Int4PackingFormat

        return Int4WeightOnlyConfig(
            group_size=self.config.group_size,
            int4_packing_format=Int4PackingFormat.TILE_PACKED_TO_4D,
            set_inductor_config=False,
        )
