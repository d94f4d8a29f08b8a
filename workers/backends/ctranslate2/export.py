"""Quantizer `ctranslate2`: CTranslate2's own converter writes the model at a compute type its runtime runs."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from workers.device import Device
from workers.backends.base import Artifact, Description, Exporter, Modules, QuantConfig, count_params

if TYPE_CHECKING:
    from workers.models import LoadedModel

ComputeType = Literal["float32", "int8", "int8_float32", "int8_float16", "float16", "int8_bfloat16", "bfloat16"]
# What CTranslate2 runs on each device kind (ctranslate2.get_supported_compute_types on x86 CPUs and CUDA).
DEVICE_TYPES = {
    "cpu": {"float32", "int8", "int8_float32"},
    "cuda": {"float32", "int8", "int8_float32", "int8_float16", "float16", "int8_bfloat16", "bfloat16"},
}
# Files of the transformers directory the converted model keeps beside model.bin (a complete deployable).
COPIED_FILES = ("tokenizer.json", "preprocessor_config.json")


def _bits(name: str) -> int:
    return 8 if name.startswith("int8") else 32 if name == "float32" else 16


class CTranslate2Config(QuantConfig):
    library: Literal["ctranslate2"] = "ctranslate2"
    renamed: ClassVar[dict[str, str]] = {"compute_type": "format"}
    format: ComputeType = Field("int8", description="CTranslate2's compute_type: weights and the types it computes in")

    @model_validator(mode="after")
    def _whole_model(self) -> CTranslate2Config:
        if self.modules != Modules():
            raise ValueError("modules: CTranslate2 converts the whole model; it takes no module selection")
        return self

    def describe(self) -> Description:
        kind = self.format
        float_part = kind.removeprefix("int8_") if kind.startswith("int8_") else "float32" if kind == "int8" else kind
        quantized = kind.startswith("int8")
        return Description(
            kind, _bits(kind), 8 if quantized else None,
            granularity="per-channel" if quantized else None, dynamic=True if quantized else None,
            compute_dtype=float_part,
        )

    def label(self) -> str:
        return self.name or f"ct2-{self.format}"


class CTranslate2Exporter(Exporter):
    library: ClassVar[str] = "ctranslate2"
    config_type: ClassVar[type[QuantConfig]] = CTranslate2Config
    package: ClassVar[str | None] = "ctranslate2"
    runtime: ClassVar[str] = "ctranslate2"
    families: ClassVar[tuple[str, ...] | None] = ("whisper",)  # the runtime is ctranslate2.models.Whisper
    config: CTranslate2Config

    def supports(self, device: Device) -> str | None:
        kind = device.torch_device.split(":")[0]
        if kind not in DEVICE_TYPES:
            return f"CTranslate2 has no {kind} backend (it runs on CPUs and CUDA GPUs)"
        if self.config.format not in DEVICE_TYPES[kind]:
            return (f"CTranslate2 computes {self.config.format} on CUDA only; on {kind}: "
                    + ", ".join(sorted(DEVICE_TYPES[kind])))
        return None

    def export(self, loaded: LoadedModel, workdir: Path) -> Artifact:
        from ctranslate2.converters import TransformersConverter

        from workers.models.ct2_checkpoint import MODEL_BIN, read_model_bin

        out = workdir / "ctranslate2"
        copied = [f for f in COPIED_FILES if (Path(loaded.path) / f).is_file()]
        TransformersConverter(loaded.path, copy_files=copied).convert(
            str(out), quantization=self.config.format, force=True)
        # What the converter quantized: the int8 arrays of model.bin (an alias shares its target's array).
        arrays = {id(a): a for a in read_model_bin(out / MODEL_BIN).values()}.values()
        int8 = [a for a in arrays if a.dtype.kind == "i" and a.dtype.itemsize == 1]
        return Artifact(self.runtime, out, {"compute_type": self.config.format}, len(int8),
                        sum(a.size for a in int8), count_params(loaded.model))
