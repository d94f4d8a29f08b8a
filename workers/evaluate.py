"""Evaluation room: transcribe a dataset with a (quantized) model, score it, time it, measure it."""
from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from workers.datasets import Utterance
from workers.scoring import normalized, normalizer_version, score

SAMPLING_RATE = 16_000


MEASUREMENT_CHOICES = ("memory", "drift")  # what is measured beside WER and speed, each switchable


class EvalConfig(BaseModel):
    """How every trial is evaluated and timed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    batch_size: int = Field(1, ge=1, le=256, description="utterances per generate() call in the timed pass")
    num_beams: int = Field(1, ge=1, le=16, description="beam width; 1 is greedy")
    max_new_tokens: int | None = Field(
        None, ge=1, le=440, description="decoder tokens per 30 s window; default the model's own limit"
    )
    warmup_utterances: int = Field(
        1, ge=0, description="the longest utterances, transcribed untimed before timing (the paths and the memory "
        "the timed passes need are then initialised: a first-call cost is not timed or counted as the model's)")
    timing_repeats: int = Field(1, ge=1, le=100, description="timed passes; RTF is their median, best-of-N a column")
    max_utterances: int | None = Field(None, ge=1, description="deterministic subset size of every dataset")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; default all cores of the worker")
    normalizer: Literal["whisper-english", "basic", "none"] = Field(
        "whisper-english", description="text normalisation before WER/CER (raw text is always kept)"
    )
    # What is measured beside WER and speed (MEASUREMENT_CHOICES); they never change a transcript. README
    # "What is measured".
    memory: Literal["inline", "isolated", "off"] = Field(
        "inline", description="inline: peak memory read around the timed passes themselves (no extra work); "
        "isolated: a fresh child process loads, quantizes and infers again (costs a second quantization); off")
    drift: Literal["on", "off"] = Field(
        "off", description="on: KL/top-1 of the quantized model against the float model, teacher-forced on the "
        "float model's greedy transcripts (one forward pass of each trial over the one-window clips)")
    trial_timeout_s: float = Field(
        6 * 3600, gt=0, description="a trial still running after this many seconds is ended and recorded failed")

    @field_validator(*MEASUREMENT_CHOICES, mode="before")
    @classmethod
    def _yaml_switch(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `on` / `off` as true / false
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


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
    # Seconds by a runtime's own timers, by column name (e.g. whisper.cpp's `runtime_mel_s`); part of the above.
    runtime: dict[str, float] = field(default_factory=dict)
    # (issue 9) what ran, for the analytic costs: encoder windows and decoder steps, each times the batch rows
    encoder_windows: int = 0
    decoded_tokens: int = 0

    @property
    def total_s(self) -> float:
        return self.features_s + self.encode_s + self.decode_s


class Transcriber(Protocol):
    """What evaluation needs of a model family: raw text and stage times for a batch of 16 kHz clips.

    A transcriber may say `solo_over_s`: clips longer than that are given to it one at a time (its family's
    long-audio rule: Whisper's long-form generation, chunking); without it every clip is batched.
    """

    def use(self, model: nn.Module) -> None:
        """Transcribe with `model` from now on (the quantized copy replaces the float one)."""

    def transcribe(self, audios: Sequence[np.ndarray]) -> tuple[list[str], StageTimes]: ...


class EncoderClock:
    """Seconds spent in a model's encoder during one call, and how often the encoder and the decoder ran, by
    forward hooks that live only for that call."""

    def __init__(self, encoder: nn.Module, device: str, decoder: nn.Module | None = None):
        self.encoder, self.decoder, self.device, self.seconds = encoder, decoder, device, 0.0
        self.windows = 0  # encoder calls (issue 9: the analytic costs count what ran)
        self.steps = 0  # decoder calls, one per generated position

    def _started(self, *_: Any) -> None:
        synchronize(self.device)
        self._t0 = time.perf_counter()

    def _finished(self, *_: Any) -> None:
        synchronize(self.device)
        self.seconds += time.perf_counter() - self._t0
        self.windows += 1

    def _decoder_step(self, *_: Any) -> None:
        self.steps += 1

    def __enter__(self) -> EncoderClock:
        # A model reused by later trials carries none of ours.
        self._hooks = [self.encoder.register_forward_pre_hook(self._started),
                       self.encoder.register_forward_hook(self._finished)]
        if self.decoder is not None:
            self._hooks.append(self.decoder.register_forward_pre_hook(self._decoder_step))
        return self

    def __exit__(self, *_: Any) -> None:
        for hook in self._hooks:
            hook.remove()


def batches(utterances: Sequence[Utterance], batch_size: int, solo_over_s: float | None = None,
            in_order: bool = False) -> Iterator[list[Utterance]]:
    """Short clips sorted by length (less padding in the decoder) in batches, then clips over `solo_over_s`
    one by one; with `in_order`, every clip where it stands (a clip over `solo_over_s` ends a batch)."""
    limit = float("inf") if solo_over_s is None else solo_over_s
    if in_order:
        batch: list[Utterance] = []
        for u in utterances:
            solo = u.duration_s > limit
            if solo and batch:
                yield batch
                batch = []
            batch.append(u)
            if solo or len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
        return
    short = sorted((u for u in utterances if u.duration_s <= limit), key=lambda u: (u.duration_s, u.utt_id))
    for start in range(0, len(short), batch_size):
        yield short[start : start + batch_size]
    for u in utterances:
        if u.duration_s > limit:
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


def run_pass(transcriber: Transcriber, utterances: Sequence[Utterance], batch_size: int,
             in_order: bool = False) -> Pass:
    result = Pass()
    for batch in batches(utterances, batch_size, getattr(transcriber, "solo_over_s", None), in_order):
        texts, times = transcriber.transcribe([u.audio for u in batch])
        for u, text in zip(batch, texts):
            result.texts[u.utt_id] = text
            result.seconds[u.utt_id] = times.total_s / len(batch)
        for name in ("features_s", "encode_s", "decode_s", "encoder_windows", "decoded_tokens"):
            setattr(result.stages, name, getattr(result.stages, name) + getattr(times, name))
        for name, seconds in times.runtime.items():
            result.stages.runtime[name] = result.stages.runtime.get(name, 0.0) + seconds
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
    started = time.perf_counter()
    if valid and config.warmup_utterances:
        longest = sorted(valid, key=lambda u: (u.duration_s, u.utt_id))[-config.warmup_utterances:]
        run_pass(transcriber, longest, 1)
    warmup_s = time.perf_counter() - started
    on_timed(True)
    started = time.perf_counter()
    passes = [run_pass(transcriber, valid, config.batch_size) for _ in range(config.timing_repeats)]
    batch1 = passes if config.batch_size == 1 else [run_pass(transcriber, valid, 1)]
    timed_s = time.perf_counter() - started
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
                       hypothesis_normalized=normalized(first.texts[u.utt_id], config.normalizer),
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
        **stages.runtime,
        "timing_repeats": config.timing_repeats,
        "warmup_utterances": min(config.warmup_utterances, len(valid)),
        "batch_size": config.batch_size,
        "num_beams": config.num_beams,
        "batch_changed_transcripts": changed,
        "warmup_s": warmup_s,
        "timed_s": timed_s,
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
