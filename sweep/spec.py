"""Spec room: pydantic models of the sweep YAML; every error carries the field's path."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workers.datasets import DatasetConfig
from workers.device import HW_CLASSES
from workers.evaluate import EvalConfig
from workers.models import ModelConfig
from workers.backends import QuantizationConfig

EXCLUDE_KEYS = ("model", "quantization", "library", "scheme", "dataset", "hardware")


class SpecError(ValueError):
    """A spec that cannot run; `problems` are lines `path: what is wrong`."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid sweep spec\n" + "\n".join(f"  {p}" for p in problems))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Exclusion(Strict):
    """A rule that removes trials from the grid; every given key must match (fnmatch patterns)."""

    model: str | None = None
    quantization: str | None = Field(None, description="the quantization's label, e.g. hqq-w3-g64")
    library: str | None = None
    scheme: str | None = None
    dataset: str | None = None
    hardware: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Exclusion:
        if all(getattr(self, k) is None for k in EXCLUDE_KEYS):
            raise ValueError(f"an exclusion needs at least one of {', '.join(EXCLUDE_KEYS)}")
        return self


class Adaptive(Strict):
    """How an adaptive sweep races each (model family, dataset, hardware) group over growing rungs of utterances."""

    objectives: list[Literal["wer", "rtf", "model_size_bytes"]] = Field(
        default_factory=lambda: ["wer", "rtf", "model_size_bytes"], min_length=1,
        description="lower is better on each; a trial stops when another is at least as good on all and better on one")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="chance that no trial of the full front is stopped")
    first_rung: int = Field(30, ge=10, description="utterances in the first rung")
    growth: float = Field(2.0, gt=1, le=10, description="each rung ends at this many times the utterances before it")
    rtf_margin: float = Field(0.1, ge=0, lt=1, description=(
        "a trial counts as faster only when its RTF is lower by more than this share: timing moves between the "
        "moments two trials' rungs ran"))
    seed: int = Field(0, description="seeds the race's stratified order of utterances")

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"objectives: each objective once, not {value}")
        return value


def _hardware_target(value: str) -> str:
    if value in ("local", "all") or value in HW_CLASSES or value.startswith("chip:"):
        return value
    raise ValueError(f"{value!r} is not a hardware target (local, all, {', '.join(HW_CLASSES)}, chip:<pattern>)")


def _price_target(value: str) -> str:
    if value in HW_CLASSES or (value.startswith("chip:") and len(value) > 5):
        return value
    raise ValueError(f"{value!r} is not a priced hardware ({', '.join(HW_CLASSES)} or chip:<pattern>)")


class Spec(Strict):
    """A sweep: the product of models x quantization x datasets x hardware, minus `exclude`."""

    sweep: str = Field(description="sweep name; partitions the results", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    results: str | None = Field(None, description="results directory or pyarrow.fs URI (relative to the spec file)")
    models: list[ModelConfig] = Field(min_length=1)
    quantization: list[QuantizationConfig] = Field(min_length=1)
    datasets: list[DatasetConfig] = Field(min_length=1)
    calibration: list[DatasetConfig] = Field(
        default_factory=list, description="datasets static schemes may calibrate on (never the evaluation audio)"
    )
    hardware: list[Annotated[str, AfterValidator(_hardware_target)]] = Field(
        default_factory=lambda: ["local"], min_length=1,
        description="targets: local, all, a class (cuda, apple, x86-cpu, arm-cpu) or chip:<pattern>",
    )
    eval: EvalConfig = Field(default_factory=EvalConfig)
    exclude: list[Exclusion] = Field(default_factory=list)
    # (issue 15) what an hour of each machine costs, the user's figures (none ship with quantsweep): the tables
    # show cost_per_audio_hour = price x RTF for the trials that ran on it
    prices: dict[Annotated[str, AfterValidator(_price_target)], Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="price per hour of a hardware class (x86-cpu, cuda, ...) or chip:<pattern> "
        "(a chip pattern wins over its class; the first matching pattern in spec order)")
    currency: str | None = Field(None, description="the prices' currency, a label the tables carry (default none)")
    strategy: Literal["grid", "adaptive"] = Field(
        "grid", description="grid: every trial on every utterance; adaptive: race each group (README: Adaptive sweeps)")
    adaptive: Adaptive | None = Field(None, description="the race's settings (strategy: adaptive; defaults if absent)")

    @field_validator("models", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        # `models: [whisper-tiny.en]` names a packaged model; `org/name` a hub id.
        if isinstance(value, list):
            return [
                ({"name": v, "hub": v} if "/" in v else {"name": v, "packaged": v}) if isinstance(v, str) else v
                for v in value
            ]
        return value

    @field_validator("datasets", "calibration", mode="before")
    @classmethod
    def _dataset_shorthand(cls, value: Any) -> Any:
        # `datasets: [librispeech-test-clean]` names a preset.
        return [{"preset": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _race_settings(self) -> Spec:
        if self.adaptive is not None and self.strategy != "adaptive":
            raise ValueError("adaptive: race settings need `strategy: adaptive`")
        if self.strategy == "adaptive" and self.adaptive is None:
            object.__setattr__(self, "adaptive", Adaptive())
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Spec:
        for axis, names in (
            ("models", [m.name for m in self.models]),
            ("datasets", [d.name for d in self.datasets]),
            ("quantization", [q.label() for q in self.quantization]),
        ):
            seen = {n for n in names if names.count(n) > 1}
            if seen:
                raise ValueError(f"{axis}: duplicate names {sorted(seen)}; give each entry its own `name`")
        return self


def _path(loc: tuple[Any, ...], union_tags: set[str]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i > 0 and isinstance(loc[i - 1], int) and part in union_tags:
            continue  # pydantic puts the discriminator's value in the path; the user never wrote it
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _problem(error: dict[str, Any], data: Any, union_tags: set[str]) -> str:
    path = _path(_as_written(tuple(error["loc"]), data), union_tags)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    if error["type"] == "missing":
        return f"{path}: required"
    library = _library_at(data, error["loc"])
    where = f" by {library}" if library and len(error["loc"]) > 2 else ""
    if error["type"] in ("literal_error", "enum") or "Input should be" in message:
        return f"{path}: {error['input']!r} is not supported{where} ({message.removeprefix('Input should be ')})"
    return f"{path}: {message}"


def _as_written(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """A field the entry gave in an earlier spelling is named as the user wrote it (`dtype`, not `format`)."""
    from workers.backends import LIBRARIES

    library = LIBRARIES.get(_library_at(data, loc) or "")
    if library is None or len(loc) < 4:
        return loc
    entry = data["quantization"][loc[1]]
    written = next((old for old, new in library.config_type.renamed.items() if new == loc[3] and old in entry), None)
    return loc[:3] + (written,) + loc[4:] if written else loc


def _library_at(data: Any, loc: tuple[Any, ...]) -> str | None:
    if len(loc) >= 2 and loc[0] == "quantization" and isinstance(loc[1], int) and isinstance(data, dict):
        entries = data.get("quantization")
        if isinstance(entries, list) and loc[1] < len(entries) and isinstance(entries[loc[1]], dict):
            return entries[loc[1]].get("library")
    return None


def parse_spec(data: Any, source: str = "<spec>") -> Spec:
    """Validate a loaded YAML document; raise SpecError listing every problem with its path."""
    from workers.backends import LIBRARIES

    if not isinstance(data, dict):
        raise SpecError(source, ["(top level): a sweep spec is a mapping with keys sweep, models, quantization, datasets"])
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(e, data, set(LIBRARIES)) for e in exc.errors()]
        raise SpecError(source, problems) from None


def deprecated_spellings(data: Any) -> list[str]:
    """`quantization[i].<old>: deprecated, write <new>` for each earlier spelling of a spec's entries."""
    from workers.backends import LIBRARIES

    entries = data.get("quantization") if isinstance(data, dict) else None
    notes = []
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        library = LIBRARIES.get(entry.get("library")) if isinstance(entry, dict) else None
        if library is not None:
            try:
                notes += [f"quantization[{i}].{note}" for note in library.config_type.upgrade(entry)[1]]
            except ValueError:
                pass  # validation reports it, with its path
    return notes


def load_spec(path: str | os.PathLike[str], notes: list[str] | None = None) -> Spec:
    """The spec in `path`; `notes` receives a deprecation message per earlier spelling it uses."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise SpecError(str(file), [f"(file): cannot read: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(str(file), [f"(yaml): {exc}"]) from None
    spec = parse_spec(data, str(file))
    if notes is not None:
        notes += deprecated_spellings(data)
    if spec.results and "://" not in spec.results and not Path(spec.results).is_absolute():
        spec = spec.model_copy(update={"results": str((file.parent / spec.results).resolve())})
    return spec


def json_schema() -> dict[str, Any]:
    """The spec's JSON Schema, for editors."""
    schema = Spec.model_json_schema()
    schema["title"] = "quantsweep sweep spec"
    return schema
