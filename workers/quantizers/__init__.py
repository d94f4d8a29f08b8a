"""Quantizer registry: the spec's `library` name -> its config model and Quantizer class."""
from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from workers.backends.mlx.export import MlxExporter
from workers.backends.onnxruntime.export import OnnxRuntimeExporter
from workers.backends.openvino.export import OpenVinoExporter
from workers.plugins import load_plugins
from workers.quantizers.base import Library, QuantConfig
from workers.quantizers.bnb import BnbQuantizer
from workers.quantizers.ctranslate2 import CTranslate2Exporter
from workers.quantizers.ggml import GgmlExporter
from workers.quantizers.hqq import HqqQuantizer
from workers.quantizers.none import NoneQuantizer
from workers.quantizers.ptq import PtqQuantizer
from workers.quantizers.quanto import QuantoQuantizer
from workers.quantizers.torch_dynamic import TorchQuantizer
from workers.quantizers.torchao import TorchaoQuantizer

# Quantizers change a torch module; exporters (ggml, ctranslate2) write an artifact for their own runtime.
QUANTIZERS: dict[str, type[Library]] = {
    q.library: q
    for q in (NoneQuantizer, TorchQuantizer, TorchaoQuantizer, HqqQuantizer, BnbQuantizer, QuantoQuantizer,
              PtqQuantizer, GgmlExporter, CTranslate2Exporter,
              OnnxRuntimeExporter, OpenVinoExporter, MlxExporter)  # issue 15: workers/backends/
}


def register(quantizer: type[Library]) -> type[Library]:
    """Add a library (from a plugin); it must be registered before the union below is built."""
    QUANTIZERS[quantizer.library] = quantizer
    return quantizer


load_plugins()

QuantizationConfig = Annotated[
    Union[tuple(q.config_type for q in QUANTIZERS.values())],  # type: ignore[valid-type]
    Field(discriminator="library"),
]


def quantizer_for(config: QuantConfig) -> Library:
    return QUANTIZERS[config.library](config)
