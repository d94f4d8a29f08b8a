"""Quantizer room, common part: the config every library extends, module selection, the result type."""
from __future__ import annotations

import fnmatch
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from workers.device import Device

# The output projection is tied to the token embedding in Whisper; quantizing it changes the
# embedding too, so it is left out unless a spec includes it by name.
DEFAULT_EXCLUDE = ("proj_out",)


class Modules(BaseModel):
    """Which `nn.Linear` layers a quantization touches, by fnmatch patterns on module names."""

    model_config = ConfigDict(extra="forbid")
    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE))

    def selects(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.include) and not any(
            fnmatch.fnmatchcase(name, p) for p in self.exclude
        )


class QuantConfig(BaseModel):
    """Fields every quantization entry of the spec has; each library adds its own knobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    library: str
    name: str | None = Field(None, description="label in tables; derived from the knobs when omitted")
    modules: Modules = Field(default_factory=Modules)

    def describe(self) -> Description:
        """The trials table's descriptive columns for this configuration."""
        raise NotImplementedError

    def needs_calibration(self) -> bool:
        return False

    def label(self) -> str:
        return self.name or f"{self.library}-{self.describe().scheme}"


@dataclass(frozen=True)
class Description:
    """What a quantization is, in the trials table's words (None where a column does not apply)."""

    scheme: str
    weight_bits: int | None = None
    act_bits: int | None = None  # 32/16 when activations stay in float
    granularity: str | None = None  # per-tensor, per-channel, per-group, per-block
    group_size: int | None = None
    dynamic: bool | None = None  # activation scales at run time (True) or from calibration (False)
    compute_dtype: str = "float32"
    simulated: bool | None = None  # (issue 9) values rounded to the grid but stored and computed in float32


@dataclass(frozen=True)
class LayerBits:
    """(issue 9) The bits one layer was quantized to, for the analytic size, BOPs and memory I/O."""

    weight_bits: int
    act_bits: int  # 32 where activations stay float
    overhead_bits: int  # scales and zero points the packed layer stores


@dataclass
class QuantizedModel:
    model: nn.Module
    quantized_modules: int
    quantized_params: int  # parameters of the original layers that were quantized
    total_params: int
    layer_bits: dict[str, LayerBits] | None = None  # (issue 9) per layer name; None: read from the description
    calibrate_s: float | None = None  # (issue 9) seconds of the calibration pass(es), part of quantize_s


Calibrate = Callable[[nn.Module], None]  # runs the model over calibration audio


class Quantizer(ABC):
    """One library. `supports` decides before anything is loaded; `quantize` changes a fresh model copy."""

    library: ClassVar[str]
    config_type: ClassVar[type[QuantConfig]]
    package: ClassVar[str | None] = None  # the import name of the library, checked on the worker

    def missing(self) -> str | None:
        """The reason this node cannot run the library at all (not installed), else None."""
        if self.package and importlib.util.find_spec(self.package) is None:
            return f"{self.package} is not installed on this node (pip install 'quantsweep[cpu|cuda|apple]')"
        return None

    def __init__(self, config: QuantConfig):
        self.config = config

    def supports(self, device: Device) -> str | None:
        """None when the scheme runs on the device, else the reason it does not."""
        return None

    @abstractmethod
    def quantize(self, model: nn.Module, device: Device, calibrate: Calibrate | None = None) -> QuantizedModel:
        """Quantize `model` (already on `device`, fp32) in place or by replacement; returns what changed."""


def selected_linears(model: nn.Module, modules: Modules) -> Iterator[tuple[str, nn.Linear]]:
    """(name, layer) of every `nn.Linear` the config selects, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and modules.selects(name):
            yield name, module


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def replace_linears(
    model: nn.Module, modules: Modules, make: Callable[[str, nn.Linear], nn.Module]
) -> QuantizedModel:
    """Swap each selected `nn.Linear` for `make(name, layer)`; the common path of HQQ, bnb and friends."""
    total = count_params(model)
    chosen = list(selected_linears(model, modules))
    quantized_params = 0
    for name, layer in chosen:
        quantized_params += sum(p.numel() for p in layer.parameters())
        replace_module(model, name, make(name, layer))
    return QuantizedModel(model, len(chosen), quantized_params, total)
