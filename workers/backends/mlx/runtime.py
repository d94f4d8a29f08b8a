"""Backend `mlx`, runtime: mlx-whisper's model (`load_models.load_model`) and its `decoding.decode`, in this
process. On Apple silicon MLX computes on the GPU (Metal); elsewhere the mlx-cpu build computes on the CPU, and
`runtime_device` says so: such figures say nothing about Apple silicon.

Features come from transformers' WhisperFeatureExtractor (the torch trials' front end), transposed to
mlx-whisper's (frames, mels); the encoder runs apart (`embed_audio`), so encode and decode are timed apart, and
`decode` takes the encoded audio as mlx-whisper allows. Greedy, no timestamps, mlx-whisper's own suppression
rules (its non-speech tokens and blank at the start, as generate's `suppress_tokens` and
`begin_suppress_tokens`); its default token limit (224) unless `max_new_tokens` says otherwise.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.datasets import Utterance
from workers.evaluate import SAMPLING_RATE, Evaluation, StageTimes, evaluate
from workers.models.whisper import WINDOW_S
from workers.backends.base import Artifact
from workers.backends.base import OnTimed, Target

if TYPE_CHECKING:
    from workers.models import LoadedModel

DECODER_LOOP = "mlx_whisper.decoding.decode"


def mlx_device() -> str:
    """What MLX computes on here, and which build."""
    import mlx.core as mx

    metal = mx.metal.is_available()
    return f"mlx {mx.default_device()} ({'Metal' if metal else 'mlx-cpu build: not Apple silicon'})"


class MlxTranscriber:
    """Audio -> raw text with mlx-whisper; never changes the text it returns."""

    solo_over_s = WINDOW_S  # one 30 s window per clip

    def __init__(self, artifact: Artifact, processor: Any, target: Target):
        import mlx.core as mx
        from mlx_whisper.decoding import DecodingOptions
        from mlx_whisper.load_models import load_model

        self.dtype = getattr(mx, artifact.settings["dtype"])
        self.model = load_model(str(artifact.path), dtype=self.dtype)
        self.processor = processor
        if target.config.num_beams != 1:
            raise ValueError(f"num_beams={target.config.num_beams}: mlx-whisper's decode has no beam search")
        self.options = DecodingOptions(language=target.language, without_timestamps=True, temperature=0.0,
                                       sample_len=target.config.max_new_tokens,
                                       fp16=artifact.settings["dtype"] == "float16")

    def transcribe(self, audios: Sequence[np.ndarray]) -> tuple[list[str], StageTimes]:
        import mlx.core as mx
        from mlx_whisper.decoding import decode

        if any(len(a) > WINDOW_S * SAMPLING_RATE for a in audios):
            raise ValueError("the mlx runtime transcribes 30 s windows; long-form audio is not supported")
        times = StageTimes()
        started = time.perf_counter()
        features = self.processor.feature_extractor(list(audios), sampling_rate=SAMPLING_RATE,
                                                    return_tensors="np").input_features
        mel = mx.array(np.ascontiguousarray(features.transpose(0, 2, 1), dtype=np.float32)).astype(self.dtype)
        times.features_s = time.perf_counter() - started
        started = time.perf_counter()
        encoded = self.model.embed_audio(mel)
        mx.eval(encoded)
        times.encode_s = time.perf_counter() - started
        started = time.perf_counter()
        results = decode(self.model, encoded, self.options)
        times.decode_s = time.perf_counter() - started
        times.encoder_windows = len(audios)
        # the loop runs until the longest text's end-of-text, one step per token for every row
        times.decoded_tokens = (max(len(r.tokens) for r in results) + 1) * len(audios)
        return [r.text.strip() for r in results], times


class MlxRuntime:
    name = "mlx"
    front_end = "transformers"  # WhisperFeatureExtractor of the model's processor
    columns = ()  # no trials columns of its own

    def transcriber(self, deployable: Artifact, loaded: LoadedModel, target: Target) -> MlxTranscriber:
        return MlxTranscriber(deployable, loaded.processor, target)

    def evaluate(self, deployable: Artifact, loaded: LoadedModel, target: Target,
                 utterances: Sequence[Utterance], on_timed: OnTimed) -> Evaluation:
        evaluation = evaluate(self.transcriber(deployable, loaded, target), utterances, target.config, on_timed)
        evaluation.columns.update(runtime_device=mlx_device(), decoder_loop=DECODER_LOOP)
        return evaluation

    def model_size_bytes(self, deployable: Artifact) -> int:
        return deployable.artifact_bytes
