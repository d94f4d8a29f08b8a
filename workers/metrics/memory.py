"""Memory metric: how much memory inference with a quantized model needs on its device, and its tensors' bytes.

CPU, `eval.memory: inline` (the default): read around the trial's own timed passes, at no extra work. A torch
model's figure is its tensors' bytes (already resident before the passes) plus the resident-set high-water
mark of the timed passes above the resident set when they began (activations, caches, workspaces); a runtime
that opens its artifact in the worker (CTranslate2) is measured from before it opened the artifact to the
passes' high-water mark. `eval.memory: isolated`: a fresh child process (workers/isolation.py) that holds
nothing but this trial's model loads, quantizes and infers again. CUDA: the allocator's peak minus what was
allocated before the trial's model existed. MPS has no peak counter: the allocation is sampled during
inference. `peak_mem_kind` names which of these a row holds; `peak_mem_null_reason` why a row has none.
"""
from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import torch

from workers.backends.base import Artifact
from workers.datasets import Utterance
from workers.deploy import fresh_transcriber
from workers.evaluate import run_pass
from workers.hardware import Hardware
from workers.isolation import run_isolated
from workers.metrics.base import Tracker, TrialContext
from workers.process_memory import (CPU_KIND, NO_RESET_REASON, InlineMemory, device_peak, fix_mmap_threshold,
                                    release_freed_memory, reset_rss_peak, rss_bytes, rss_peak)

if TYPE_CHECKING:
    from workers.trial import Trial


# An isolated memory pass runs one batch; longer than this many times the whole evaluation means it hangs.
PASS_TIMEOUT_FACTOR = 3.0
PASS_MIN_TIMEOUT_S = 120.0


class MemoryTracker(Tracker):
    """`eval.memory`: inline (the default), isolated or off."""

    name = "memory"
    null_reason = "peak_mem_null_reason"
    columns = (
        # bytes inference with this model needed above what it held before the model existed; peak_mem_kind
        # says how (README "What is measured")
        pa.field("peak_mem_bytes", pa.int64()),
        pa.field("peak_mem_kind", pa.string()),
        pa.field("peak_mem_null_reason", pa.string()),  # why peak_mem_bytes is NULL (off, unsupported, failed)
    )

    def __init__(self, context: TrialContext, setting: str):
        super().__init__(context, setting)
        cpu = context.device.is_cpu
        self.inline = InlineMemory() if cpu and setting == "inline" else None
        # torch's allocator sees a torch model's GPU memory; a runtime's own allocations it does not
        self.on_gpu = not cpu and context.module is not None
        self.peak: dict[str, Any] = {}

    def around_evaluation(self) -> AbstractContextManager[Any]:
        if self.inline is not None:
            self.inline.opening()
        if self.on_gpu:
            return device_peak(self.context.device.torch_device, self.context.allocated_before, self.peak)
        return nullcontext()

    def on_timed(self, starting: bool) -> None:
        if self.inline is not None:
            self.inline.on_timed(starting)

    def measure(self) -> dict[str, Any]:
        ctx = self.context
        if "peak_mem_bytes" in ctx.row or "peak_mem_null_reason" in ctx.row:
            return {}  # a runtime evaluated in an isolated child measured it there (or said why it could not)
        if self.peak:
            return self.peak  # a GPU's allocator peak, read around the evaluation
        if self.inline is not None:
            return self.inline.columns(ctx.row["model_mem_bytes"])
        if not ctx.device.is_cpu:
            return {self.null_reason: f"the {ctx.runtime.name} runtime's memory on {ctx.hardware.device_name} is "
                                      "not torch's allocator's to read"}
        # isolated: the worker holds cached models and datasets, so memory is measured where only this model
        # lives. One calibration clip: a model's memory does not depend on what its static scales came from.
        artifact = replace(ctx.deployable, workdir=None) if isinstance(ctx.deployable, Artifact) else None
        # A hang ends here, before the trial's own limit would end the trial and lose its numbers.
        left_s = ctx.trial.eval.trial_timeout_s - (now() - ctx.row["started_at"]).total_seconds()
        timeout_s = min(max(PASS_MIN_TIMEOUT_S, PASS_TIMEOUT_FACTOR * (ctx.row["eval_s"] + ctx.row["quantize_s"])),
                        max(1.0, left_s / 2))
        calibration = ctx.calibration and [u for u in ctx.calibration if u.audio is not None][:1]
        measured, output = run_isolated(memory_pass, ctx.trial, ctx.hardware,
                                        memory_clips(ctx.utterances, ctx.trial.eval.batch_size), calibration,
                                        artifact, timeout_s=timeout_s)
        for line in output.splitlines():
            ctx.log.add(line)
        return measured


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def memory_clips(utterances: list[Utterance], batch_size: int) -> list[Utterance]:
    """The batch that needs the most memory: the longest clips of the dataset, as many as one batch holds."""
    valid = [u for u in utterances if u.audio is not None]
    return sorted(valid, key=lambda u: (u.duration_s, u.utt_id))[-batch_size:]


def memory_pass(trial: Trial, hardware: Hardware, clips: list[Utterance], calibration: list[Utterance] | None,
                artifact: Artifact | None) -> dict[str, Any]:
    """In an isolated child: load, quantize (or open the worker's artifact), infer on `clips`; the resident
    memory inference needed.

    A first round of the same (load, quantize, infer), dropped before the reading, imports the family's and
    the library's code and lets the libraries initialise what they load lazily (their kernels, over 100 MB
    of modules for Whisper): the figure is the model and its inference (weights, scales, activations,
    caches), not the interpreter or code.
    """
    torch.set_num_threads(trial.eval.threads or hardware.cores)
    fix_mmap_threshold()
    run_pass(fresh_transcriber(trial, hardware, calibration, artifact), clips, trial.eval.batch_size)
    release_freed_memory()
    before = rss_bytes()
    transcriber = fresh_transcriber(trial, hardware, calibration, artifact)
    release_freed_memory()  # the loaded checkpoint and the float weights quantization replaced are gone
    if not reset_rss_peak():
        return {"peak_mem_null_reason": NO_RESET_REASON}
    run_pass(transcriber, clips, trial.eval.batch_size)
    return {"peak_mem_bytes": rss_peak() - before, "peak_mem_kind": CPU_KIND}


TRACKER = MemoryTracker
