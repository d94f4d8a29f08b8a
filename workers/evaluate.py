"""Evaluation room: transcribe a dataset with a (quantized) model, score it, time it, measure it."""
from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from workers.datasets import Utterance
from workers.scoring import normalizer_version, score

SAMPLING_RATE = 16_000
WINDOW_S = 30.0  # Whisper's window: longer audio goes through long-form generation


class EvalConfig(BaseModel):
    """How every trial is evaluated and timed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    batch_size: int = Field(1, ge=1, le=256, description="utterances per generate() call in the timed pass")
    num_beams: int = Field(1, ge=1, le=16, description="beam width; 1 is greedy")
    max_new_tokens: int | None = Field(
        None, ge=1, le=440, description="decoder tokens per 30 s window; default the model's own limit"
    )
    warmup_utterances: int = Field(1, ge=0, description="utterances transcribed untimed before timing")
    timing_repeats: int = Field(1, ge=1, le=100, description="timed passes; RTF is their median, best-of-N a column")
    max_utterances: int | None = Field(None, ge=1, description="deterministic subset size of every dataset")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; default all cores of the worker")
    normalizer: Literal["whisper-english", "basic", "none"] = Field(
        "whisper-english", description="text normalisation before WER/CER (raw text is always kept)"
    )


def synchronize(device: str) -> None:
    """Wait for queued kernels so wall-clock timing covers them (CUDA and MPS run asynchronously)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


@dataclass
class StageTimes:
    features_s: float = 0.0
    encode_s: float = 0.0
    decode_s: float = 0.0
    # (issue 9) what ran, for the analytic costs: encoder windows and decoder steps, each times the batch rows
    encoder_windows: int = 0
    decoded_tokens: int = 0

    @property
    def total_s(self) -> float:
        return self.features_s + self.encode_s + self.decode_s


class Transcriber(Protocol):
    """What evaluation needs of a model family: raw text and stage times for a batch of 16 kHz clips."""

    def use(self, model: nn.Module) -> None:
        """Transcribe with `model` from now on (the quantized copy replaces the float one)."""

    def transcribe(self, audios: Sequence[np.ndarray]) -> tuple[list[str], StageTimes]: ...


class WhisperTranscriber:
    """Audio -> raw text with transformers' own `generate`; batches, sorts and times but never changes text."""

    def __init__(self, model: nn.Module, processor: Any, device: str, config: EvalConfig, language: str):
        self.processor, self.device, self.config = processor, device, config
        self.use(model)
        # English-only checkpoints take no language token; multilingual ones are told the dataset's language.
        self.generate_kwargs: dict[str, Any] = {"num_beams": config.num_beams}
        if config.max_new_tokens is not None:
            self.generate_kwargs["max_new_tokens"] = config.max_new_tokens
        if getattr(model.generation_config, "is_multilingual", False):
            self.generate_kwargs.update(language=language, task="transcribe")
        self._encoder_s = 0.0

    def use(self, model: nn.Module) -> None:
        self.model = model
        # Features go in at the dtype of the first layer: fp16/bf16 baselines take cast features.
        self.dtype = model.get_encoder().conv1.weight.dtype

    def _encoder_started(self, *_: Any) -> None:
        synchronize(self.device)
        self._encoder_t0 = time.perf_counter()

    def _encoder_finished(self, *_: Any) -> None:
        synchronize(self.device)
        self._encoder_s += time.perf_counter() - self._encoder_t0
        self._calls["encoder"] += 1

    def _decoder_step(self, *_: Any) -> None:
        self._calls["decoder"] += 1

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
        self._encoder_s = 0.0
        self._calls = {"encoder": 0, "decoder": 0}
        # Hooks live only for this call: a model reused by later trials carries none of ours.
        encoder = self.model.get_encoder()
        hooks = [encoder.register_forward_pre_hook(self._encoder_started),
                 encoder.register_forward_hook(self._encoder_finished),
                 self.model.get_decoder().register_forward_pre_hook(self._decoder_step)]
        started = time.perf_counter()
        try:
            with torch.no_grad():
                ids = self.model.generate(features, **self.generate_kwargs, **extra)
            synchronize(self.device)
        finally:
            for hook in hooks:
                hook.remove()
        generate_s = time.perf_counter() - started
        times.encode_s = self._encoder_s
        times.decode_s = generate_s - self._encoder_s
        times.encoder_windows = self._calls["encoder"] * len(audios)
        times.decoded_tokens = self._calls["decoder"] * len(audios)
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [t.strip() for t in texts], times


def batches(utterances: Sequence[Utterance], batch_size: int) -> Iterator[list[Utterance]]:
    """Short clips sorted by length (less padding in the decoder) in batches; long clips one by one."""
    short = sorted((u for u in utterances if u.duration_s <= WINDOW_S), key=lambda u: (u.duration_s, u.utt_id))
    for start in range(0, len(short), batch_size):
        yield short[start : start + batch_size]
    for u in utterances:
        if u.duration_s > WINDOW_S:
            yield [u]


@dataclass
class Pass:
    """One pass over the dataset: transcripts and compute seconds per utterance."""

    texts: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    stages: StageTimes = field(default_factory=StageTimes)

    @property
    def compute_s(self) -> float:
        return self.stages.total_s


def run_pass(transcriber: Transcriber, utterances: Sequence[Utterance], batch_size: int) -> Pass:
    result = Pass()
    for batch in batches(utterances, batch_size):
        texts, times = transcriber.transcribe([u.audio for u in batch])
        for u, text in zip(batch, texts):
            result.texts[u.utt_id] = text
            result.seconds[u.utt_id] = times.total_s / len(batch)
        for name in ("features_s", "encode_s", "decode_s", "encoder_windows", "decoded_tokens"):
            setattr(result.stages, name, getattr(result.stages, name) + getattr(times, name))
    return result


@dataclass
class Evaluation:
    """What a trial measured on one dataset: the trials-table columns and the utterances rows."""

    columns: dict[str, Any]
    utterance_rows: list[dict[str, Any]]


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def cv(values: Sequence[float]) -> float | None:
    """Coefficient of variation over timing repeats (None with fewer than two)."""
    return statistics.pstdev(values) / statistics.mean(values) if len(values) > 1 and statistics.mean(values) else None


def evaluate(
    transcriber: Transcriber, utterances: Sequence[Utterance], config: EvalConfig,
    on_timed: Callable[[bool], None] = lambda started: None,
) -> Evaluation:
    """Warm up, time `timing_repeats` passes, take transcripts from the first, score them."""
    valid = [u for u in utterances if u.audio is not None]
    if valid and config.warmup_utterances:
        run_pass(transcriber, valid[: config.warmup_utterances], 1)
    on_timed(True)
    passes = [run_pass(transcriber, valid, config.batch_size) for _ in range(config.timing_repeats)]
    batch1 = passes if config.batch_size == 1 else [run_pass(transcriber, valid, 1)]
    on_timed(False)
    audio_s = sum(u.duration_s for u in valid)
    rtfs = [p.compute_s / audio_s for p in passes] if audio_s else []
    latencies = [s for p in batch1 for s in p.seconds.values()]
    best_latency = [min(p.seconds[u.utt_id] for p in batch1) for u in valid]
    first = passes[0]
    changed = sum(first.texts[u.utt_id] != batch1[0].texts[u.utt_id] for u in valid)

    normalizer = normalizer_version(config.normalizer)
    rows: list[dict[str, Any]] = []
    for u in utterances:
        row: dict[str, Any] = {"utt_id": u.utt_id, "duration_s": u.duration_s, "reference": u.reference,
                               "normalizer": normalizer, "error": u.error}
        if u.audio is not None:
            row.update(hypothesis=first.texts[u.utt_id], seconds=first.seconds[u.utt_id],
                       **score(u.reference, first.texts[u.utt_id], config.normalizer).__dict__)
        rows.append(row)
    scored = [r for r in rows if r["error"] is None]
    ref_words = sum(r["ref_words"] for r in scored)
    word_errors = sum(r["substitutions"] + r["deletions"] + r["insertions"] for r in scored)
    ref_chars = sum(r["ref_chars"] for r in scored)
    char_errors = sum(r["char_errors"] for r in scored)
    stages = first.stages
    columns = {
        "normalizer": normalizer,
        "n_utterances": len(utterances),
        "n_utterance_errors": len(utterances) - len(valid),
        "audio_seconds": audio_s,
        "ref_words": ref_words,
        "word_errors": word_errors,
        "wer": word_errors / ref_words if ref_words else None,
        "cer": char_errors / ref_chars if ref_chars else None,
        "rtf": statistics.median(rtfs) if rtfs else None,
        "rtf_best": min(rtfs) if rtfs else None,
        "rtf_cv": cv(rtfs),
        "rtfx": 1 / statistics.median(rtfs) if rtfs else None,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p90_s": percentile(latencies, 90),
        "latency_best_s": percentile(best_latency, 50),
        "latency_cv": cv([percentile(list(p.seconds.values()), 50) for p in batch1]),
        "features_s": stages.features_s,
        "encode_s": stages.encode_s,
        "decode_s": stages.decode_s,
        "timing_repeats": config.timing_repeats,
        "warmup_utterances": min(config.warmup_utterances, len(valid)),
        "batch_size": config.batch_size,
        "num_beams": config.num_beams,
        "batch_changed_transcripts": changed,
        # (issue 9) at batch 1, as the analytic costs assume
        "encoder_windows": batch1[0].stages.encoder_windows,
        "decoded_tokens": batch1[0].stages.decoded_tokens,
    }
    return Evaluation(columns, rows)


class _ByteCounter(io.RawIOBase):
    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.size += n
        return n


def serialized_bytes(model: nn.Module) -> int:
    """Bytes of `torch.save(state_dict)`: weights as stored, scales and zeros included.

    torch.save rather than safetensors because packed int8 weights (torch.ao) and torchao's tensor
    subclasses cannot be written by safetensors, and every library's model must be measured the same way.
    """
    counter = _ByteCounter()
    torch.save(model.state_dict(), counter)
    return counter.size


@contextmanager
def peak_memory(device: str) -> Iterator[dict[str, Any]]:
    """Peak memory while the block runs: RSS high-water mark on CPU, allocator peaks on CUDA and MPS."""
    result: dict[str, Any] = {}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        yield result
        result.update(peak_mem_bytes=int(torch.cuda.max_memory_allocated()), peak_mem_kind="cuda_max_allocated")
    elif device == "mps":
        yield result
        result.update(peak_mem_bytes=int(torch.mps.driver_allocated_memory()), peak_mem_kind="mps_driver_allocated")
    else:
        _reset_rss_peak()
        yield result
        result.update(peak_mem_bytes=_rss_peak(), peak_mem_kind="rss_hwm")


def _reset_rss_peak() -> None:
    # Linux resets VmHWM to the current RSS when "5" is written to clear_refs; elsewhere the peak is the process's.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _rss_peak() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
