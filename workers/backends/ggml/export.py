"""Quantizer `ggml`: the model in whisper.cpp's file format, 2-D weights quantized by ggml's own quantizer."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from workers.device import Device
from workers.backends.base import Artifact, Description, Exporter, Modules, QuantConfig, count_params
from workers.backends.ggml.file import TYPES, unsupported_rows, write_ggml

if TYPE_CHECKING:
    from workers.models import LoadedModel, ModelConfig

# f32 is whisper.cpp's unquantized type; the whisper.cpp of pywhispercpp 1.5.1 aborts on it (GGML_ASSERT in
# im2col), which is what a crash of an isolated runtime looks like in the results.
GgmlTypeName = Literal["f32", "f16", "q8_0", "q5_0", "q5_1", "q4_0", "q4_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]


class GgmlConfig(QuantConfig):
    library: Literal["ggml"] = "ggml"
    renamed: ClassVar[dict[str, str]] = {"type": "format"}
    format: GgmlTypeName = Field("q8_0", description="ggml's tensor type for every 2-D weight")

    @model_validator(mode="after")
    def _whole_model(self) -> GgmlConfig:
        if self.modules != Modules():
            raise ValueError("modules: ggml files hold every 2-D weight in one type; it takes no module selection")
        return self

    def describe(self) -> Description:
        kind = TYPES[self.format]
        blocked = kind.block > 1
        return Description(self.format, kind.weight_bits, None, granularity="per-block" if blocked else None,
                           group_size=kind.block if blocked else None, compute_dtype="float32")

    def label(self) -> str:
        return self.name or f"ggml-{self.format}"


def _bundled(library: str) -> bool:
    """Whether pywhispercpp's wheel carries a ggml backend library (libggml-cuda, libggml-metal, ...)."""
    spec = importlib.util.find_spec("_pywhispercpp")
    if spec is None or spec.origin is None:
        return False
    return any(Path(spec.origin).parent.glob(f"{library}*.so*")) or any(
        Path(spec.origin).parent.glob(f"pywhispercpp.libs/{library}*"))


class GgmlExporter(Exporter):
    library: ClassVar[str] = "ggml"
    config_type: ClassVar[type[QuantConfig]] = GgmlConfig
    package: ClassVar[str | None] = "pywhispercpp"
    runtime: ClassVar[str] = "whispercpp"
    families: ClassVar[tuple[str, ...] | None] = ("whisper",)  # its runtime runs Whisper models
    config: GgmlConfig

    def supports(self, device: Device) -> str | None:
        if device.torch_device.startswith("cuda") and not _bundled("libggml-cuda"):
            return "the installed whisper.cpp (pywhispercpp wheel) has no CUDA backend"
        return None

    def supports_model(self, model: ModelConfig) -> str | None:
        from workers.models import model_shapes

        shapes = model_shapes(model)
        # Unknown shapes (weights not on this machine yet) are decided on the worker, which has them.
        return unsupported_rows(shapes, self.config.format) if shapes is not None else None

    def export(self, loaded: LoadedModel, workdir: Path) -> Artifact:
        written = write_ggml(loaded.model, loaded.processor, Path(loaded.path), self.config.format,
                             workdir / f"ggml-model-{self.config.format}.bin")
        return Artifact(self.runtime, written.path, {"format": self.config.format}, written.quantized_tensors,
                        written.quantized_params, count_params(loaded.model))
