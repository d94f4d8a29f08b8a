"""CTC room: encoder-only models with a CTC head (wav2vec2, HuBERT, Parakeet CTC), greedy decoding, chunked long audio."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from workers.evaluate import SAMPLING_RATE, EvalConfig, StageTimes, synchronize
from workers.models import ModelConfig

ARCHITECTURES = ("Wav2Vec2ForCTC", "HubertForCTC", "ParakeetForCTC")
# Audio over CHUNK_S goes through windows of CHUNK_S that overlap by 2 x CONTEXT_S: each window's logits are
# kept only for its middle CHUNK_S - 2 x CONTEXT_S, so every kept frame saw CONTEXT_S of audio on both sides
# (the stride scheme of transformers' ASR pipeline: chunk_length_s=30, stride_length_s=5).
CHUNK_S = 30.0
CONTEXT_S = 5.0


class CtcTranscriber:
    """Audio -> raw text: one forward pass, argmax per frame, repeats and blanks collapsed by the tokenizer.

    `encode_s` is the forward pass, `decode_s` the CTC decode (argmax and collapse); there is no beam search
    and no token limit, so `num_beams` and `max_new_tokens` do not apply.
    """

    solo_over_s = CHUNK_S

    def __init__(self, model: nn.Module, processor: Any, device: str, config: EvalConfig, language: str):
        self.processor, self.device = processor, device
        self.use(model)

    def use(self, model: nn.Module) -> None:
        self.model = model
        self.dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())

    def transcribe(self, audios: Sequence[np.ndarray]) -> tuple[list[str], StageTimes]:
        times = StageTimes()
        if len(audios) == 1 and len(audios[0]) > CHUNK_S * SAMPLING_RATE:
            frames = [self._chunked_logits(audios[0], times)]
        else:
            frames = self._logits(list(audios), times)
        started = time.perf_counter()
        ids = [f.argmax(dim=-1).tolist() for f in frames]
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        times.decode_s += time.perf_counter() - started
        return [t.strip() for t in texts], times

    def _logits(self, audios: list[np.ndarray], times: StageTimes) -> list[torch.Tensor]:
        """Per clip, the logits of its own frames (a padded batch's extra frames cut off)."""
        started = time.perf_counter()
        # The feature extractor's own config says whether the model takes an attention mask (wav2vec2-base: no).
        inputs = self.processor.feature_extractor(audios, sampling_rate=SAMPLING_RATE, return_tensors="pt",
                                                  padding="longest")
        tensors = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                   for k, v in inputs.items()}
        synchronize(self.device)
        times.features_s += time.perf_counter() - started
        started = time.perf_counter()
        with torch.no_grad():
            logits = self.model(**tensors).logits
        synchronize(self.device)
        times.encode_s += time.perf_counter() - started
        longest = max(len(a) for a in audios)
        return [logits[i, : self._frames(len(a), longest, logits.shape[1])].float().cpu() for i, a in enumerate(audios)]

    def _frames(self, samples: int, longest: int, padded_frames: int) -> int:
        lengths = getattr(self.model, "_get_feat_extract_output_lengths", None)
        if lengths is not None:  # wav2vec2 and HuBERT know their conv stack's output length exactly
            return min(int(lengths(torch.tensor(samples))), padded_frames)
        return min(math.ceil(padded_frames * samples / longest), padded_frames)

    def _chunked_logits(self, audio: np.ndarray, times: StageTimes) -> torch.Tensor:
        step, context = (int(s * SAMPLING_RATE) for s in (CHUNK_S - 2 * CONTEXT_S, CONTEXT_S))
        kept = []
        for start in range(0, len(audio), step):
            lo, hi = max(0, start - context), min(len(audio), start + step + context)
            [window] = self._logits([audio[lo:hi]], times)
            rate = window.shape[0] / (hi - lo)
            kept.append(window[round((start - lo) * rate) : round((min(start + step, len(audio)) - lo) * rate)])
        return torch.cat(kept)


class Ctc:
    """Models with a CTC head whose architecture is in ARCHITECTURES; others are refused by name."""

    default_exclude: tuple[str, ...] = ()  # no tied output layer

    def claims(self, hf_config: dict[str, Any]) -> bool:
        return any(a in ARCHITECTURES for a in hf_config.get("architectures") or ())

    def locate(self, config: ModelConfig) -> str:
        from workers.models import transformers_dir

        return transformers_dir(config)

    def load(self, path: str) -> tuple[nn.Module, Any]:
        from transformers import AutoConfig, AutoModelForCTC, AutoProcessor

        architectures = AutoConfig.from_pretrained(path).architectures or []
        if not any(a in ARCHITECTURES for a in architectures):
            raise ValueError(f"{path}: architecture {architectures} is not one the ctc family runs "
                             f"({', '.join(ARCHITECTURES)})")
        return AutoModelForCTC.from_pretrained(path, dtype="float32"), AutoProcessor.from_pretrained(path)

    def transcriber(self, model: nn.Module, processor: Any, device: str, config: EvalConfig,
                    language: str) -> CtcTranscriber:
        return CtcTranscriber(model, processor, device, config, language)
