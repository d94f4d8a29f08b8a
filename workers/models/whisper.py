"""Whisper's room: its 30 s window and long-form rule, its language tokens, its default exclusions, its transcriber."""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from workers.evaluate import SAMPLING_RATE, EncoderClock, EvalConfig, StageTimes, synchronize
from workers.models import ModelConfig

WINDOW_S = 30.0  # Whisper's window: longer audio goes through long-form generation
# The output projection is tied to the token embedding in Whisper; quantizing it changes the
# embedding too, so it is left out unless a spec includes it by name.
DEFAULT_EXCLUDE = ("proj_out",)


class WhisperTranscriber:
    """Audio -> raw text with transformers' own `generate`; batches, sorts and times but never changes text."""

    solo_over_s = WINDOW_S  # long-form generation takes one clip at a time

    def __init__(self, model: nn.Module, processor: Any, device: str, config: EvalConfig, language: str):
        self.processor, self.device, self.config = processor, device, config
        self.use(model)
        # English-only checkpoints take no language token; multilingual ones are told the dataset's language.
        self.generate_kwargs: dict[str, Any] = {"num_beams": config.num_beams}
        if config.max_new_tokens is not None:
            self.generate_kwargs["max_new_tokens"] = config.max_new_tokens
        if getattr(model.generation_config, "is_multilingual", False):
            self.generate_kwargs.update(language=language, task="transcribe")

    def use(self, model: nn.Module) -> None:
        self.model = model
        # Features go in at the dtype of the first layer: fp16/bf16 baselines take cast features.
        self.dtype = model.get_encoder().conv1.weight.dtype

    def transcribe(self, audios: Sequence[np.ndarray]) -> tuple[list[str], StageTimes]:
        """One generate() call over a batch; audio over 30 s must come alone (long-form)."""
        times = StageTimes()
        started = time.perf_counter()
        long_form = any(len(a) > WINDOW_S * SAMPLING_RATE for a in audios)
        if long_form and len(audios) > 1:
            raise ValueError("long-form audio is transcribed one clip at a time")
        extra: dict[str, Any] = {}
        if long_form:
            inputs = self.processor.feature_extractor(
                list(audios), sampling_rate=SAMPLING_RATE, return_tensors="pt",
                truncation=False, padding="longest", return_attention_mask=True,
            )
            extra = {"attention_mask": inputs.attention_mask.to(self.device), "return_timestamps": True}
        else:
            inputs = self.processor.feature_extractor(list(audios), sampling_rate=SAMPLING_RATE, return_tensors="pt")
        features = inputs.input_features.to(self.device, self.dtype)
        synchronize(self.device)
        times.features_s = time.perf_counter() - started
        started = time.perf_counter()
        clock = EncoderClock(self.model.get_encoder(), self.device, self.model.get_decoder())
        with clock as encoder, torch.no_grad():
            ids = self.model.generate(features, **self.generate_kwargs, **extra)
            synchronize(self.device)
        generate_s = time.perf_counter() - started
        times.encode_s = encoder.seconds
        times.decode_s = generate_s - encoder.seconds
        times.encoder_windows, times.decoded_tokens = encoder.windows * len(audios), encoder.steps * len(audios)
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [t.strip() for t in texts], times


class Whisper:
    """OpenAI Whisper checkpoints (transformers' WhisperForConditionalGeneration); packaged and CTranslate2 weights."""

    default_exclude = DEFAULT_EXCLUDE

    def claims(self, hf_config: dict[str, Any]) -> bool:
        return hf_config.get("model_type") == "whisper"

    def locate(self, config: ModelConfig) -> str:
        from workers.models import transformers_dir

        return transformers_dir(config)

    def load(self, path: str) -> tuple[nn.Module, Any]:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        return WhisperForConditionalGeneration.from_pretrained(path, dtype="float32"), WhisperProcessor.from_pretrained(path)

    def transcriber(self, model: nn.Module, processor: Any, device: str, config: EvalConfig,
                    language: str) -> WhisperTranscriber:
        return WhisperTranscriber(model, processor, device, config, language)
