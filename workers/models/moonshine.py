"""Moonshine's room: raw-audio encoder-decoder (transformers' MoonshineForConditionalGeneration), its long-audio rule."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from workers.evaluate import SAMPLING_RATE, EncoderClock, EvalConfig, StageTimes, synchronize
from workers.models import ModelConfig

# Moonshine is trained on segments of up to 30 s: longer audio is cut into pieces of at most PIECE_S, each
# cut at the quietest 100 ms of the last CUT_SEARCH_S before the limit (no overlap: a word spoken across a cut
# can still be lost), transcribed in one batch and joined with spaces.
PIECE_S = 30.0
CUT_SEARCH_S = 5.0
CUT_FRAME_S = 0.1
# Without max_new_tokens, at most this many tokens per second of audio: the Moonshine authors' guard
# (transformers' Moonshine docs) against a decoder that repeats itself until the model's own limit.
TOKENS_PER_S = 6.5
# Tied to the decoder's token embedding (`_tied_weights_keys`), as in Whisper.
DEFAULT_EXCLUDE = ("proj_out",)


def pieces(audio: np.ndarray) -> list[np.ndarray]:
    """The audio cut into pieces of at most PIECE_S at quiet points (one piece when it is short enough)."""
    limit, search, frame = (int(s * SAMPLING_RATE) for s in (PIECE_S, CUT_SEARCH_S, CUT_FRAME_S))
    out, start = [], 0
    while len(audio) - start > limit:
        window = audio[start + limit - search : start + limit]
        energy = np.square(window[: len(window) // frame * frame]).reshape(-1, frame).sum(axis=1)
        cut = start + limit - search + int(np.argmin(energy)) * frame + frame // 2
        out.append(audio[start:cut])
        start = cut
    out.append(audio[start:])
    return out


class MoonshineTranscriber:
    """Audio -> raw text with `generate` on raw 16 kHz samples; long clips come alone and are cut into pieces."""

    solo_over_s = PIECE_S

    def __init__(self, model: nn.Module, processor: Any, device: str, config: EvalConfig, language: str):
        self.processor, self.device, self.config = processor, device, config
        self.use(model)

    def use(self, model: nn.Module) -> None:
        self.model = model
        self.dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())

    def transcribe(self, audios: Sequence[np.ndarray]) -> tuple[list[str], StageTimes]:
        times = StageTimes()
        started = time.perf_counter()
        cut = [pieces(a) for a in audios]
        if len(audios) > 1 and any(len(c) > 1 for c in cut):
            raise ValueError(f"audio over {PIECE_S:.0f} s is transcribed one clip at a time")
        flat = [p for c in cut for p in c]
        inputs = self.processor.feature_extractor(flat, sampling_rate=SAMPLING_RATE, return_tensors="pt",
                                                  padding="longest", return_attention_mask=True)
        values = inputs.input_values.to(self.device, self.dtype)
        mask = inputs.attention_mask.to(self.device)
        limit = self.config.max_new_tokens or math.ceil(max(len(p) for p in flat) / SAMPLING_RATE * TOKENS_PER_S)
        synchronize(self.device)
        times.features_s = time.perf_counter() - started
        started = time.perf_counter()
        clock = EncoderClock(self.model.get_encoder(), self.device, self.model.get_decoder())
        with clock as encoder, torch.no_grad():
            ids = self.model.generate(values, attention_mask=mask, num_beams=self.config.num_beams,
                                      max_new_tokens=max(limit, 1))
            synchronize(self.device)
        generate_s = time.perf_counter() - started
        times.encode_s = encoder.seconds
        times.decode_s = generate_s - encoder.seconds
        times.encoder_windows, times.decoded_tokens = encoder.windows * len(audios), encoder.steps * len(audios)
        texts = iter(t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True))
        return [" ".join(t for t in (next(texts) for _ in c) if t) for c in cut], times


class Moonshine:
    """Useful Sensors' Moonshine checkpoints (tiny, base) in transformers' layout."""

    default_exclude = DEFAULT_EXCLUDE

    def claims(self, hf_config: dict[str, Any]) -> bool:
        return hf_config.get("model_type") == "moonshine"

    def locate(self, config: ModelConfig) -> str:
        from workers.models import transformers_dir

        return transformers_dir(config)

    def load(self, path: str) -> tuple[nn.Module, Any]:
        from transformers import AutoProcessor, MoonshineForConditionalGeneration

        return MoonshineForConditionalGeneration.from_pretrained(path, dtype="float32"), AutoProcessor.from_pretrained(path)

    def transcriber(self, model: nn.Module, processor: Any, device: str, config: EvalConfig,
                    language: str) -> MoonshineTranscriber:
        return MoonshineTranscriber(model, processor, device, config, language)
