"""Runtime `ctranslate2`: a CTranslate2 Whisper directory run by `ctranslate2.models.Whisper` in this process.

Features come from the model's own transformers feature extractor (the same front end as the torch trials);
the encoder and the decoder are timed apart through CTranslate2's API (`encode`, then `generate` on its output).
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from workers.datasets import Utterance
from workers.evaluate import SAMPLING_RATE, EvalConfig, Evaluation, StageTimes, evaluate
from workers.models.whisper import WINDOW_S
from workers.backends.base import Artifact
from workers.backends.base import OnTimed, Target

if TYPE_CHECKING:
    from workers.models import LoadedModel

# CTranslate2's OpenMP threads spin while idle by default, which starves a neighbour on a shared machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def ct2_device(torch_device: str) -> tuple[str, int]:
    """cuda:1 -> ("cuda", 1); cpu -> ("cpu", 0)."""
    kind, _, index = torch_device.partition(":")
    return kind, int(index or 0)


class CTranslate2Transcriber:
    """Audio -> raw text with `ctranslate2.models.Whisper`; never changes the text it returns."""

    solo_over_s = WINDOW_S  # a longer clip comes alone, and is refused: 30 s windows only

    def __init__(self, artifact: Artifact, processor: Any, target: Target):
        import ctranslate2

        device, index = ct2_device(target.device.torch_device)
        self.model = ctranslate2.models.Whisper(str(artifact.path), device=device, device_index=index,
                                                compute_type=artifact.settings["compute_type"],
                                                intra_threads=target.threads)
        self.processor, self.config = processor, target.config
        tokenizer = processor.tokenizer
        tokens = ["<|startoftranscript|>"]
        if self.model.is_multilingual:
            tokens += [f"<|{target.language}|>", "<|transcribe|>"]
        self.prompt = tokenizer.convert_tokens_to_ids(tokens + ["<|notimestamps|>"])
        self.options = generate_options(target.config, len(self.prompt))

    def transcribe(self, audios: Sequence[np.ndarray]) -> tuple[list[str], StageTimes]:
        import ctranslate2

        if any(len(a) > WINDOW_S * SAMPLING_RATE for a in audios):
            raise ValueError("the ctranslate2 runtime transcribes 30 s windows; long-form audio is not supported")
        times = StageTimes()
        started = time.perf_counter()
        features = self.processor.feature_extractor(list(audios), sampling_rate=SAMPLING_RATE,
                                                    return_tensors="np").input_features
        storage = ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32))
        times.features_s = time.perf_counter() - started
        started = time.perf_counter()
        encoded = self.model.encode(storage, to_cpu=False)
        times.encode_s = time.perf_counter() - started
        started = time.perf_counter()
        results = self.model.generate(encoded, [self.prompt] * len(audios), **self.options)
        times.decode_s = time.perf_counter() - started
        texts = self.processor.tokenizer.batch_decode([r.sequences_ids[0] for r in results], skip_special_tokens=True)
        return [t.strip() for t in texts], times


def generate_options(config: EvalConfig, prompt_tokens: int) -> dict[str, Any]:
    """`generate` keywords for the spec's beams and token limit (CTranslate2's max_length counts the prompt,
    transformers' max_new_tokens does not)."""
    options: dict[str, Any] = {"beam_size": config.num_beams}
    if config.max_new_tokens is not None:
        options["max_length"] = prompt_tokens + config.max_new_tokens
    return options


class CTranslate2Runtime:
    name = "ctranslate2"
    front_end = "transformers"  # WhisperFeatureExtractor of the model's processor
    columns = ()  # no trials columns of its own

    def transcriber(self, deployable: Artifact, loaded: LoadedModel, target: Target) -> CTranslate2Transcriber:
        return CTranslate2Transcriber(deployable, loaded.processor, target)

    def evaluate(self, deployable: Artifact, loaded: LoadedModel, target: Target,
                 utterances: Sequence[Utterance], on_timed: OnTimed) -> Evaluation:
        return evaluate(self.transcriber(deployable, loaded, target), utterances, target.config, on_timed)

    def model_size_bytes(self, deployable: Artifact) -> int:
        return deployable.artifact_bytes
