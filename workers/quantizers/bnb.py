"""Quantizer `bnb`: bitsandbytes LLM.int8 (`Linear8bitLt`) and 4-bit NF4/FP4 (`Linear4bit`) layers."""
from __future__ import annotations

import logging
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator
from torch import nn

from workers.device import Device
from workers.quantizers.base import Calibrate, QuantConfig, QuantizedModel, Quantizer, replace_linears
from workers.quantizers.none import BITS, DTYPES

FOUR_BIT_ONLY = ("blocksize", "double_quant", "compute")


class BnbConfig(QuantConfig):
    # `compute_dtype` is also a descriptive method, so the field is stored as `compute`.
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    library: Literal["bnb"] = "bnb"
    scheme_name: Literal["int8", "nf4", "fp4"] = Field(
        "nf4",
        description="int8: LLM.int8 (int8 row-wise weights and activations, outlier columns in float16); "
        "nf4 / fp4: 4-bit blockwise weights with the NormalFloat or FP4 code",
    )
    threshold: float = Field(
        6.0, ge=0.0, description="int8 only: activation magnitude above which a column stays float16 (0 = none)"
    )
    blocksize: Literal[32, 64, 128, 256, 512, 1024, 2048, 4096] = Field(
        64, description="nf4/fp4 only: weights per absmax scale, a power of two from 32 to 4096"
    )
    double_quant: bool = Field(False, description="nf4/fp4 only: quantize the absmax scales again (8-bit, blocks of 256)")
    compute: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", alias="compute_dtype", description="nf4/fp4 only: dtype the matmul runs in: fp32, fp16 or bf16"
    )

    @model_validator(mode="after")
    def _knobs_match_scheme(self) -> BnbConfig:
        if self.scheme_name == "int8":
            fields = type(self).model_fields
            misplaced = [fields[f].alias or f for f in FOUR_BIT_ONLY if f in self.model_fields_set]
            if misplaced:
                raise ValueError(f"{', '.join(misplaced)}: only for nf4/fp4, not int8")
        elif "threshold" in self.model_fields_set:
            raise ValueError(f"threshold: only for int8, not {self.scheme_name}")
        return self

    def scheme(self) -> str:
        return self.scheme_name

    def weight_bits(self) -> int:
        return 8 if self.scheme_name == "int8" else 4

    def act_bits(self) -> int:
        return 8 if self.scheme_name == "int8" else BITS[self.compute]

    def granularity(self) -> str:
        return "per-channel" if self.scheme_name == "int8" else "per-block"

    def group_size(self) -> int | None:
        return None if self.scheme_name == "int8" else self.blocksize

    def dynamic(self) -> bool | None:
        return True if self.scheme_name == "int8" else None

    def compute_dtype(self) -> str:
        # LLM.int8 casts its inputs to float16 whatever the model's dtype.
        return "float16" if self.scheme_name == "int8" else str(DTYPES[self.compute]).removeprefix("torch.")

    def label(self) -> str:
        if self.name:
            return self.name
        parts = ["bnb", self.scheme_name]
        if self.scheme_name == "int8":
            if self.threshold != 6.0:
                parts.append(f"t{self.threshold:g}")
        else:
            if self.blocksize != 64:
                parts.append(f"b{self.blocksize}")
            if self.double_quant:
                parts.append("dq")
            if self.compute != "fp32":
                parts.append(self.compute)
        return "-".join(parts)


class _DropFloat16CastNotice(logging.Filter):
    """bitsandbytes logs a WARNING on every int8 matmul whose input is not float16: every call, for fp32 models."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("MatMul8bitLt: inputs will be cast")


def _silence_int8_cast_notice() -> None:
    log = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _DropFloat16CastNotice) for f in log.filters):
        log.addFilter(_DropFloat16CastNotice())


class BnbQuantizer(Quantizer):
    library: ClassVar[str] = "bnb"
    config_type: ClassVar[type[QuantConfig]] = BnbConfig
    config: BnbConfig

    def supports(self, device: Device) -> str | None:
        # bitsandbytes 0.50 registers kernels for CUDA and the CPU and, on Apple silicon, an MPS backend
        # for the 4-bit ops; the int8 ops everywhere else fall back to its pure-PyTorch "default" backend.
        # Every scheme therefore runs on every class; the speed of the fallbacks is what a trial measures.
        return None

    def quantize(self, model: nn.Module, device: Device, calibrate: Calibrate | None = None) -> QuantizedModel:
        import bitsandbytes as bnb

        cfg = self.config

        def make_int8(name: str, layer: nn.Linear) -> nn.Module:
            new = bnb.nn.Linear8bitLt(
                layer.in_features,
                layer.out_features,
                bias=layer.bias is not None,
                has_fp16_weights=False,
                threshold=cfg.threshold,
                device="meta",
            )
            # Int8Params quantizes when it is moved from the CPU to a device (the CPU included).
            new.weight = bnb.nn.Int8Params(layer.weight.data.cpu(), requires_grad=False, has_fp16_weights=False)
            new.bias = layer.bias
            return new.to(device.torch_device)

        def make_4bit(name: str, layer: nn.Linear) -> nn.Module:
            new = bnb.nn.Linear4bit(
                layer.in_features,
                layer.out_features,
                bias=layer.bias is not None,
                compute_dtype=DTYPES[cfg.compute],
                compress_statistics=cfg.double_quant,
                quant_type=cfg.scheme_name,
                device="meta",
            )
            # Params4bit quantizes on its first move to a device, wherever its data lives.
            new.weight = bnb.nn.Params4bit(
                layer.weight.data,
                requires_grad=False,
                blocksize=cfg.blocksize,
                compress_statistics=cfg.double_quant,
                quant_type=cfg.scheme_name,
                module=new,
            )
            new.bias = layer.bias
            return new.to(device.torch_device)

        if cfg.scheme_name == "int8":
            _silence_int8_cast_notice()
            return replace_linears(model, cfg.modules, make_int8)
        return replace_linears(model, cfg.modules, make_4bit)
