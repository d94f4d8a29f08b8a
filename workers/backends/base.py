"""Backend room, common part: library configs, module selection, the deployables and the runtime seam.

A backend (one folder under workers/backends/) is one or more libraries (`Library`: a spec `library` name with
its config) and the runtime that runs what they produce. A torch quantizer's deployable is a module
(`QuantizedModel`); an exporter's is an `Artifact`, files on disk that only its runtime runs. A runtime hands
evaluation a Transcriber over its deployable and says how big the deployable is; evaluation, scoring, metrics
and rows are the same for every runtime.
"""
from __future__ import annotations

import fnmatch
import importlib.util
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from workers.calibration import CalibrationPlan
from workers.datasets import Utterance
from workers.device import Device
from workers.evaluate import EvalConfig, Evaluation, Transcriber
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
    """Fields every quantization entry of the spec has; each library adds its own knobs.

    One vocabulary for every library: `format` (a library's named type: fp16, nf4, q8_0, int8_float32, ...),
    `weight_bits` and `act_bits` (integer bits; `act_bits` absent means activations stay in the float
    `compute_dtype`), `group_size`, `method` (an algorithm). Earlier spellings are still read (`renamed`), each
    with a deprecation message that names the entry (sweep/spec.py).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    renamed: ClassVar[dict[str, str]] = {}  # an earlier spelling -> today's word
    library: str
    name: str | None = Field(None, description="label in tables; derived from the knobs when omitted")
    modules: Modules = Field(default_factory=Modules)

    @model_validator(mode="before")
    @classmethod
    def _todays_words(cls, data: Any) -> Any:
        return cls.upgrade(data)[0] if isinstance(data, dict) else data

    @classmethod
    def upgrade(cls, entry: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The entry in today's words, and a deprecation message for each earlier spelling it used."""
        out, notes = dict(entry), []
        for old, new in cls.renamed.items():
            if old in out:
                if new in out:
                    raise ValueError(f"{old}: an earlier spelling of {new}; give {new} only")
                out[new] = out.pop(old)
                notes.append(f"{old}: deprecated, write {new}: {out[new]}")
        return out, notes

    def describe(self) -> Description:
        """The trials table's descriptive columns for this configuration."""
        raise NotImplementedError

    def needs_calibration(self) -> bool:
        return False

    def calibration_plan(self) -> CalibrationPlan:
        """How calibration runs the model (the transcriber's own decoding unless a library says otherwise)."""
        return CalibrationPlan()

    def label(self) -> str:
        return self.name or f"{self.library}-{self.describe().scheme}"


def dtype_name(short: str) -> str:
    """fp16 -> float16: the spec says the short name (compute_dtype, format), the trials table the long one."""
    return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[short]


@dataclass(frozen=True)
class Description:
    """What a quantization is, in the trials table's words (None where a column does not apply)."""

    scheme: str
    weight_bits: int | None = None
    act_bits: int | None = None  # integer activation bits; None where activations stay in compute_dtype
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
    # (issue 17) calibration_pass, calibration_tokens, calibration_frames of one pass; None: not calibrated
    calibration: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # Every quantizer hands back a model for inference. Modules a library swaps in start in training mode,
        # and libraries pick their kernels by it: bitsandbytes packs 4-bit weights for its AVX512-BF16 CPU
        # kernel and runs LLM.int8 as inference only outside training (transformers' own loading leaves eval).
        self.model.eval()


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


# Runs the model over calibration audio; a pass may stop after `stop_after` (a block: later layers record nothing).
Calibrate = Callable[..., None]


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
    runtime: ClassVar[str] = "torch"  # the runtime that runs its deployable (its backend folder)
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
        from workers.models.families import FAMILIES

        if self.families is None or family in self.families:
            return None
        # a registered variant of a family it runs (a plugin's subclass, e.g. a randomly initialised Whisper) is that family
        if family in FAMILIES and any(isinstance(FAMILIES[family], type(FAMILIES[f])) for f in self.families if f in FAMILIES):
            return None
        return f"{self.library} runs {' and '.join(self.families)} models only, not {family}"

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


Deployable = QuantizedModel | Artifact


def build_artifact(exporter: Exporter, loaded: LoadedModel, calibration: Calibration | None = None) -> Artifact:
    """The exporter's artifact in a fresh temporary directory that lives as long as the artifact."""
    workdir = tempfile.TemporaryDirectory(prefix="quantsweep-artifact-")
    # exporters without a static scheme take no calibration argument
    artifact = (exporter.export(loaded, Path(workdir.name), calibration) if calibration is not None
                else exporter.export(loaded, Path(workdir.name)))
    artifact.workdir = workdir
    return artifact


@dataclass(frozen=True)
class Target:
    """How and where a deployable is evaluated: the trial's eval settings, language, device and threads."""

    device: Device
    config: EvalConfig
    language: str
    threads: int


OnTimed = Callable[[bool], None]


class Runtime(Protocol):
    name: str
    front_end: str  # what computes the log-mel features the model sees
    columns: tuple[pa.Field, ...]  # trials columns of its own (its stage timers), registered with the schema

    def transcriber(self, deployable: Any, loaded: LoadedModel, target: Target) -> Transcriber:
        """What transcribes with the deployable in this process (the isolated memory pass uses it)."""

    def evaluate(self, deployable: Any, loaded: LoadedModel, target: Target, utterances: Sequence[Utterance],
                 on_timed: OnTimed) -> Evaluation:
        """evaluate() over a transcriber of this runtime (in this process or an isolated child)."""

    def model_size_bytes(self, deployable: Any) -> int:
        """The deployable's size as deployed: the trials table's `model_size_bytes`."""
