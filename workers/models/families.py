"""Model family room: how each family is located, loaded and run; the registry the spec's `family` names."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from torch import nn

if TYPE_CHECKING:
    from workers.evaluate import EvalConfig, Transcriber
    from workers.models import ModelConfig


class Family(Protocol):
    def locate(self, config: ModelConfig) -> str:
        """Where the weights are (a directory or hub id), fetching or converting once if needed."""

    def load(self, path: str) -> tuple[nn.Module, Any]:
        """An fp32 CPU model and its processor."""

    def transcriber(self, model: nn.Module, processor: Any, device: str, config: EvalConfig,
                    language: str) -> Transcriber: ...


class Whisper:
    def locate(self, config: ModelConfig) -> str:
        from workers.models import transformers_dir

        return transformers_dir(config)

    def load(self, path: str) -> tuple[nn.Module, Any]:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        return WhisperForConditionalGeneration.from_pretrained(path, dtype="float32"), WhisperProcessor.from_pretrained(path)

    def transcriber(self, model: nn.Module, processor: Any, device: str, config: EvalConfig,
                    language: str) -> Transcriber:
        from workers.evaluate import WhisperTranscriber

        return WhisperTranscriber(model, processor, device, config, language)


# Moonshine and CTC models join here as one class each.
FAMILIES: dict[str, Family] = {"whisper": Whisper()}
