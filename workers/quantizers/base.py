"""Quantizer room, common part: library configs, module selection, and the deployables (module or artifact)."""
from __future__ import annotations

import fnmatch
import importlib.util
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from workers.device import Device
from workers.models.whisper import DEFAULT_EXCLUDE

if TYPE_CHECKING:
    from workers.models import LoadedModel, ModelConfig


class Modules(BaseModel):
    """Which `nn.Linear` layers a quantization touches, by fnmatch patterns on module names."""

    model_config = ConfigDict(extra="forbid")
    include: list[str] = Field(default_factory=lambda: ["*"])
    # Not given in a spec, it becomes the model family's own (families.with_family_defaults); Whisper's otherwise.
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
    """The torch runtime's deployable: a quantized module."""

    runtime: ClassVar[str] = "torch"
    model: nn.Module
    quantized_modules: int
    quantized_params: int  # parameters of the original layers that were quantized
    total_params: int
    layer_bits: dict[str, LayerBits] | None = None  # (issue 9) per layer name; None: read from the description
    calibrate_s: float | None = None  # (issue 9) seconds of the calibration pass(es), part of quantize_s


@dataclass
class Artifact:
    """Files on disk that only `runtime` can run, built from the float model by an exporter."""

    runtime: str
    path: Path  # the model file, or the directory of its files
    settings: dict[str, Any]  # how the runtime loads it (e.g. CTranslate2's compute_type)
    quantized_modules: int
    quantized_params: int
    total_params: int
    # Owns the files: they are removed when the artifact is dropped (a worker keeps one, see WorkerCache).
    workdir: tempfile.TemporaryDirectory | None = field(repr=False, default=None)
    calibrate_s: float | None = None  # (issue 15) seconds a static scheme spent on calibration, part of quantize_s

    @property
    def artifact_bytes(self) -> int:
        """Bytes of the deployed files on disk (every file under `path`)."""
        files = [self.path] if self.path.is_file() else [p for p in self.path.rglob("*") if p.is_file()]
        return sum(p.stat().st_size for p in files)


Calibrate = Callable[[nn.Module], None]  # runs the model over calibration audio


@dataclass(frozen=True)
class Calibration:
    """(issue 15) What an exporter's static scheme calibrates on: the calibration split's audio (never the
    evaluation audio) and its language."""

    audios: list[np.ndarray]
    language: str


class Library(ABC):
    """One library. `supports` and `supports_model` decide before anything is quantized."""

    library: ClassVar[str]
    config_type: ClassVar[type[QuantConfig]]
    package: ClassVar[str | None] = None  # the import name of the library, checked on the worker
    runtime: ClassVar[str] = "torch"  # what runs its deployable (workers/runtimes)
    families: ClassVar[tuple[str, ...] | None] = None  # the model families it can take; None: every family

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

    def supports_family(self, family: str) -> str | None:
        """None when the library runs on models of this family (workers.models.families), else the reason."""
        if self.families is not None and family not in self.families:
            return f"{self.library} runs {' and '.join(self.families)} models only, not {family}"
        return None

    def supports_model(self, model: ModelConfig) -> str | None:
        """None when the scheme fits the model's shapes, else the reason it does not."""
        return None


class Quantizer(Library):
    """A library that changes a fresh copy of the torch model (the deployable is that module)."""

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


class Exporter(Library):
    """A library whose quantization is an artifact for its own runtime (`runtime`), written from the float model."""

    @abstractmethod
    def export(self, loaded: LoadedModel, workdir: Path, calibration: Calibration | None = None) -> Artifact:
        """Convert and quantize `loaded` (fp32, CPU) into files under `workdir`; `calibration` is given only
        where the config needs calibration."""
