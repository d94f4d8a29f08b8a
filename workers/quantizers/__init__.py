"""Quantizer registry: the spec's `library` name -> its config model and Quantizer class."""
from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from workers.quantizers.base import QuantConfig, Quantizer
from workers.quantizers.bnb import BnbConfig, BnbQuantizer
from workers.quantizers.hqq import HqqConfig, HqqQuantizer
from workers.quantizers.none import NoneConfig, NoneQuantizer
from workers.quantizers.quanto import QuantoConfig, QuantoQuantizer
from workers.quantizers.torch_dynamic import TorchConfig, TorchQuantizer
from workers.quantizers.torchao import TorchaoConfig, TorchaoQuantizer

QUANTIZERS: dict[str, type[Quantizer]] = {
    q.library: q
    for q in (NoneQuantizer, TorchQuantizer, TorchaoQuantizer, HqqQuantizer, BnbQuantizer, QuantoQuantizer)
}

QuantizationConfig = Annotated[
    Union[NoneConfig, TorchConfig, TorchaoConfig, HqqConfig, BnbConfig, QuantoConfig],
    Field(discriminator="library"),
]


def quantizer_for(config: QuantConfig) -> Quantizer:
    return QUANTIZERS[config.library](config)
