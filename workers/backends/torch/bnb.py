"""Quantizer `bnb`: bitsandbytes LLM.int8 (`Linear8bitLt`) and 4-bit NF4/FP4 (`Linear4bit`) layers."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator
from torch import nn

from workers.device import Device
from workers.backends.base import Calibrate, Description, QuantConfig, QuantizedModel, Quantizer, replace_linears
from workers.backends.base import dtype_name
from workers.backends.torch.none import DTYPES

FOUR_BIT_ONLY = ("blocksize", "double_quant", "compute_dtype")


class BnbConfig(QuantConfig):
    library: Literal["bnb"] = "bnb"
    renamed: ClassVar[dict[str, str]] = {"scheme": "format"}
    format: Literal["int8", "nf4", "fp4"] = Field(
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
    double_quant: bool = Field(
        False, description="nf4/fp4 only: quantize the absmax scales again (8-bit, blocks of 256)"
    )
    compute_dtype: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="nf4/fp4 only: dtype the matmul runs in: fp32, fp16 or bf16"
    )

    @model_validator(mode="after")
    def _knobs_match_scheme(self) -> BnbConfig:
        if self.format == "int8":
            misplaced = [f for f in FOUR_BIT_ONLY if f in self.model_fields_set]
            if misplaced:
                raise ValueError(f"{', '.join(misplaced)}: only for nf4/fp4, not int8")
        elif "threshold" in self.model_fields_set:
            raise ValueError(f"threshold: only for int8, not {self.format}")
        return self

    def describe(self) -> Description:
        if self.format == "int8":
            # LLM.int8 casts its inputs to float16 whatever the model's dtype.
            return Description(self.format, 8, 8, "per-channel", dynamic=True, compute_dtype="float16")
        return Description(self.format, 4, None, "per-block", self.blocksize,
                           compute_dtype=dtype_name(self.compute_dtype))

    def label(self) -> str:
        if self.name:
            return self.name
        parts = ["bnb", self.format]
        if self.format == "int8":
            if self.threshold != 6.0:
                parts.append(f"t{self.threshold:g}")
        else:
            if self.blocksize != 64:
                parts.append(f"b{self.blocksize}")
            if self.double_quant:
                parts.append("dq")
            if self.compute_dtype != "fp32":
                parts.append(self.compute_dtype)
        return "-".join(parts)


class BnbQuantizer(Quantizer):
    library: ClassVar[str] = "bnb"
    config_type: ClassVar[type[QuantConfig]] = BnbConfig
    package: ClassVar[str | None] = "bitsandbytes"
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
                compute_dtype=DTYPES[cfg.compute_dtype],
                compress_statistics=cfg.double_quant,
                quant_type=cfg.format,
                device="meta",
            )
            # Params4bit quantizes on its first move to a device, wherever its data lives.
            new.weight = bnb.nn.Params4bit(
                layer.weight.data,
                requires_grad=False,
                blocksize=cfg.blocksize,
                compress_statistics=cfg.double_quant,
                quant_type=cfg.format,
                module=new,
            )
            new.bias = layer.bias
            return new.to(device.torch_device)

        if cfg.format == "int8":
            return replace_linears(model, cfg.modules, make_int8)
        return replace_linears(model, cfg.modules, make_4bit)
