"""Test plugin: a small random Whisper family, a no-op family, and a `probe` quantizer that sleeps, hangs or crashes.

`tiny-whisper` is a randomly initialised 2-layer Whisper with tiny.en's real tokenizer and feature extractor:
real transformers code and real quantizers, fast enough for multi-node tests (a `probe` copy of it sleeps). `noop` transcribes nothing
in no time, for measuring the scheduler itself.
"""
from __future__ import annotations

import importlib.util
import multiprocessing
import os
import signal
import time
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from workers.device import Device
from workers.evaluate import EvalConfig, StageTimes
from workers.models import ModelConfig
from workers.models.families import FAMILIES, Whisper
from workers.backends import register
from workers.backends.base import Calibrate, Description, QuantConfig, QuantizedModel, Quantizer, count_params
from workers.models.whisper import WhisperTranscriber


class SleepyWhisperTranscriber(WhisperTranscriber):
    """Whisper's transcriber; a probe-quantized model first sleeps its `probe_sleep_s` per batch (outside the
    stage timers), so that trials last long enough for every runner of a class to take some."""

    def transcribe(self, audios: list[np.ndarray]) -> tuple[list[str], StageTimes]:
        time.sleep(getattr(self.model, "probe_sleep_s", 0.0))
        return super().transcribe(audios)


class TinyWhisper(Whisper):
    def transcriber(self, model: nn.Module, processor: Any, device: str, config: EvalConfig,
                    language: str) -> SleepyWhisperTranscriber:
        return SleepyWhisperTranscriber(model, processor, device, config, language)

    def locate(self, config: ModelConfig) -> str:
        return super().locate(config.model_copy(update={"family": "whisper"}))

    def load(self, path: str) -> tuple[nn.Module, Any]:
        from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

        torch.manual_seed(0)
        config = WhisperConfig(vocab_size=51864, d_model=64, encoder_layers=2, decoder_layers=2,
                               encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=256,
                               decoder_ffn_dim=256, max_source_positions=1500, max_target_positions=448,
                               decoder_start_token_id=50257, eos_token_id=50256, pad_token_id=50256)
        model = WhisperForConditionalGeneration(config)
        model.generation_config = GenerationConfig.from_pretrained(path)
        return model, WhisperProcessor.from_pretrained(path)


class NoopTranscriber:
    def __init__(self, sleep_s: float):
        self.sleep_s = sleep_s

    def use(self, model: nn.Module) -> None:
        self.sleep_s = getattr(model, "probe_sleep_s", self.sleep_s)

    def transcribe(self, audios: list[np.ndarray]) -> tuple[list[str], StageTimes]:
        started = time.perf_counter()
        time.sleep(self.sleep_s)
        return ["" for _ in audios], StageTimes(decode_s=time.perf_counter() - started)


class Noop:
    default_exclude: tuple[str, ...] = ()

    def locate(self, config: ModelConfig) -> str:
        return "noop"

    def load(self, path: str) -> tuple[nn.Module, Any]:
        return nn.Linear(4, 4), None

    def transcriber(self, model: nn.Module, processor: Any, device: str, config: EvalConfig,
                    language: str) -> NoopTranscriber:
        return NoopTranscriber(getattr(model, "probe_sleep_s", 0.0))


FAMILIES["tiny-whisper"] = TinyWhisper()
FAMILIES["noop"] = Noop()


class ProbeConfig(QuantConfig):
    library: Literal["probe"] = "probe"
    sleep_s: float = Field(0.0, ge=0, description="seconds the transcriber sleeps per batch (a stand-in for work)")
    # bad-row: the trial runs but its row cannot be written (a column of the wrong type): the error is outside
    # the trial itself, in its handling on the worker
    crash: Literal["none", "raise", "segfault", "hang", "bad-row"] = "none"
    crash_on: str = Field("*", description="only crash on nodes of this hardware class")
    # isolated-child: only where the model is quantized again in an isolated child (eval.memory: isolated)
    crash_in: Literal["trial", "isolated-child"] = "trial"
    needs_package: str | None = Field(None, description="a module the node must have, as a library's package")

    def describe(self) -> Description:
        return Description("probe")

    def label(self) -> str:
        return self.name or f"probe-{self.crash}"


@register
class ProbeQuantizer(Quantizer):
    library: ClassVar[str] = "probe"
    config_type: ClassVar[type[QuantConfig]] = ProbeConfig
    config: ProbeConfig

    def missing(self) -> str | None:
        package = self.config.needs_package
        if package and importlib.util.find_spec(package) is None:
            return f"{package} is not installed on this node"
        return None

    def quantize(self, model: nn.Module, device: Device, calibrate: Calibrate | None = None) -> QuantizedModel:
        cfg = self.config
        # Ray's workers are not multiprocessing children; the isolated child is
        in_child = multiprocessing.parent_process() is not None
        crashes = cfg.crash_on in ("*", device.hw_class) and in_child == (cfg.crash_in == "isolated-child")
        if crashes:
            if cfg.crash == "raise":
                raise RuntimeError("probe quantizer raised on purpose")
            if cfg.crash == "segfault":
                os.kill(os.getpid(), signal.SIGSEGV)
            if cfg.crash == "hang":
                time.sleep(24 * 3600)
        model.probe_sleep_s = cfg.sleep_s
        if cfg.crash == "bad-row" and crashes:
            return QuantizedModel(model, "not a count", 0, count_params(model))  # type: ignore[arg-type]
        return QuantizedModel(model, 0, 0, count_params(model))
