"""Model family room: the registry the spec's `family` names, and which family a checkpoint is (from its config)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn

from workers.models.ctc import Ctc
from workers.models.moonshine import Moonshine
from workers.models.whisper import Whisper

if TYPE_CHECKING:
    from workers.evaluate import EvalConfig, Transcriber
    from workers.models import ModelConfig
    from workers.backends.base import QuantConfig


class Family(Protocol):
    default_exclude: tuple[str, ...]  # module patterns no quantization touches unless a spec says `exclude`

    def claims(self, hf_config: dict[str, Any]) -> bool:
        """Whether a checkpoint with this config.json is of this family (optional: else chosen by name only)."""

    def locate(self, config: ModelConfig) -> str:
        """Where the weights are (a directory or hub id), fetching or converting once if needed."""

    def load(self, path: str) -> tuple[nn.Module, Any]:
        """An fp32 CPU model and its processor."""

    def transcriber(self, model: nn.Module, processor: Any, device: str, config: EvalConfig,
                    language: str) -> Transcriber: ...


FAMILIES: dict[str, Family] = {"whisper": Whisper(), "moonshine": Moonshine(), "ctc": Ctc()}
WHISPER_SOURCES = ("packaged", "ctranslate2")  # these sources only ever hold Whisper weights


class ModelUnavailable(RuntimeError):
    """A model's weights or config cannot be reached; the message names the model and why."""


def hub_unreachable(config: ModelConfig, detail: str = "") -> ModelUnavailable:
    return ModelUnavailable(f"model {config.name!r}: hub model {config.hub!r} is unreachable (no network or "
                            "HF_HUB_OFFLINE=1) and not in the local Hugging Face cache" + (f" ({detail})" if detail else ""))


def check_reachable(config: ModelConfig) -> None:
    """On the driver, before a run writes anything: a hub model that cannot be reached is one clear error."""
    if config.source_kind == "hub":
        checkpoint_config(config)


def checkpoint_config(config: ModelConfig) -> dict[str, Any]:
    """The config.json of a local directory or hub id (from the hub cache, or downloaded when online)."""
    if config.source_kind == "local":
        file = Path(config.local) / "config.json"
        if not file.is_file():
            raise ModelUnavailable(f"model {config.name!r}: {file} does not exist (local: a transformers directory)")
        return json.loads(file.read_text())
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(config.hub, "config.json", revision=config.revision)
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text())
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise hub_unreachable(config)
    try:
        return json.loads(Path(hf_hub_download(config.hub, "config.json", revision=config.revision)).read_text())
    except OSError as error:  # connection errors and missing repos alike
        from huggingface_hub.errors import LocalEntryNotFoundError

        if isinstance(error, (LocalEntryNotFoundError, ConnectionError)):  # no network: the hub is unreachable
            raise hub_unreachable(config, type(error).__name__) from None
        raise ModelUnavailable(f"model {config.name!r}: cannot read config.json of hub model {config.hub!r}: "
                               f"{type(error).__name__}") from None


def family_of(config: ModelConfig) -> str:
    """The spec's `family`, else the family whose `claims` accepts the checkpoint's config.json."""
    if config.family is not None:
        return config.family
    if config.source_kind in WHISPER_SOURCES:
        return "whisper"
    hf_config = checkpoint_config(config)
    for name, family in FAMILIES.items():
        claims = getattr(family, "claims", None)  # a plugin family without it is chosen by name only
        if claims is not None and claims(hf_config):
            return name
    raise ModelUnavailable(
        f"model {config.name!r}: model_type {hf_config.get('model_type')!r} / architectures "
        f"{hf_config.get('architectures')} is no known family ({', '.join(FAMILIES)}); set `family:` if it is one")


def with_family_defaults(quantization: QuantConfig, family: str) -> QuantConfig:
    """The quantization with the family's default module exclusions where the spec gave no `exclude`."""
    if "exclude" in quantization.modules.model_fields_set:
        return quantization
    modules = quantization.modules.model_copy(update={"exclude": list(FAMILIES[family].default_exclude)})
    return quantization.model_copy(update={"modules": modules})
