"""Runtime `whispercpp`: a ggml file run by whisper.cpp (through pywhispercpp) in an isolated child process.

whisper.cpp aborts the process on some inputs (GGML_ASSERT), so the whole evaluate() over the clips runs in
a fresh child (workers/isolation.py): a crash kills only the child and becomes the trial's error. The child's
peak RSS above what it started with is this runtime's memory figure. Features are whisper.cpp's own log-mel
(its `mel` timer); the per-stage seconds are whisper.cpp's own timers (`whisper_print_timings`).
"""
from __future__ import annotations

import datetime as dt
import importlib
import os
import re
import tempfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from workers.datasets import Utterance
from workers.evaluate import Evaluation, StageTimes, evaluate
from workers.isolation import run_isolated
from workers.process_memory import (ISOLATED_RUN_KIND, NO_RESET_REASON, fix_mmap_threshold, release_freed_memory,
                                    reset_rss_peak, rss_bytes, rss_peak)
from workers.backends.base import Artifact, OnTimed, Target

if TYPE_CHECKING:
    from workers.models import LoadedModel

# whisper.cpp's timers, as whisper_print_timings names them; each becomes a `runtime_<name>_s` column.
STAGES = ("load", "mel", "sample", "encode", "decode", "batchd", "prompt")
_TIMING = re.compile(r"(\w+) time =\s*([0-9.]+) ms")


def parse_timings(text: str) -> dict[str, float]:
    """`whisper_print_timings` output -> {"runtime_<stage>_s": seconds} for the stages whisper.cpp times."""
    found = {name: float(ms) / 1000 for name, ms in _TIMING.findall(text) if name in STAGES}
    return {f"runtime_{name}_s": seconds for name, seconds in found.items()}


def _printed_timings(ctx: Any) -> str:
    """What whisper_print_timings writes to stderr (file descriptor 2), captured."""
    import _pywhispercpp as pw

    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            pw.whisper_print_timings(ctx)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        return captured.read().decode(errors="replace")


class WhisperCppTranscriber:
    """Audio -> raw text with whisper.cpp's `whisper_full`, one clip per call, settings as the torch trials'."""

    def __init__(self, path: str, target: Target):
        from pywhispercpp.model import Model

        config = target.config
        params: dict[str, Any] = {
            "n_threads": target.threads, "language": target.language,
            # Like transformers' generate in the torch trials: no timestamps, no text carried between clips,
            # no temperature fallback.
            "no_timestamps": True, "no_context": True, "temperature_inc": 0.0,
            "print_progress": False, "print_realtime": False,
        }
        if config.num_beams > 1:
            params["beam_search"] = {"beam_size": config.num_beams, "patience": -1.0}
        if config.max_new_tokens is not None:
            params["max_tokens"] = config.max_new_tokens
        self.model = Model(path, params_sampling_strategy=1 if config.num_beams > 1 else 0,
                           context_params={"use_gpu": target.device.torch_device != "cpu"}, **params)
        self.load_s = parse_timings(_printed_timings(self.model._ctx)).get("runtime_load_s")

    def transcribe(self, audios: Sequence[np.ndarray]) -> tuple[list[str], StageTimes]:
        import _pywhispercpp as pw

        times = StageTimes()
        texts = []
        for audio in audios:
            pw.whisper_reset_timings(self.model._ctx)
            started = time.perf_counter()
            segments = self.model.transcribe(np.ascontiguousarray(audio, dtype=np.float32))
            wall_s = time.perf_counter() - started
            stages = parse_timings(_printed_timings(self.model._ctx))
            stages.pop("runtime_load_s", None)  # the model's load, not this clip's
            texts.append("".join(s.text for s in segments).strip())
            times.features_s += stages.get("runtime_mel_s", 0.0)
            times.encode_s += stages.get("runtime_encode_s", 0.0)
            times.decode_s += wall_s - stages.get("runtime_mel_s", 0.0) - stages.get("runtime_encode_s", 0.0)
            for name, seconds in stages.items():
                times.runtime[name] = times.runtime.get(name, 0.0) + seconds
        return texts, times


def evaluate_in_child(path: str, target: Target, utterances: Sequence[Utterance]) -> Evaluation:
    """evaluate() with whisper.cpp; runs in the isolated child, so its peak RSS is this evaluation's alone."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when libgomp loads, below
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")  # an abort prints its assertion, not a minute of gdb
    importlib.import_module("pywhispercpp.model")  # the runtime's code is not the model's memory

    fix_mmap_threshold()
    release_freed_memory()
    start_rss = rss_bytes()
    resettable = reset_rss_peak()
    timed: dict[str, dt.datetime] = {}

    def on_timed(starting: bool) -> None:
        timed["timed_started_at" if starting else "timed_finished_at"] = dt.datetime.now(dt.timezone.utc)

    transcriber = WhisperCppTranscriber(path, target)
    evaluation = evaluate(transcriber, utterances, target.config, on_timed)
    memory = ({"peak_mem_bytes": rss_peak() - start_rss, "peak_mem_kind": ISOLATED_RUN_KIND} if resettable
              else {"peak_mem_null_reason": NO_RESET_REASON})
    evaluation.columns.update(timed, runtime_load_s=transcriber.load_s, **memory)
    return evaluation


class WhisperCppRuntime:
    name = "whispercpp"
    front_end = "whisper.cpp"  # whisper.cpp computes its own log-mel from the 16 kHz samples
    # seconds by whisper.cpp's own timers over the first timed pass (load: the model's, once)
    columns = tuple(pa.field(f"runtime_{stage}_s", pa.float64()) for stage in STAGES)

    def transcriber(self, deployable: Artifact, loaded: LoadedModel, target: Target) -> WhisperCppTranscriber:
        return WhisperCppTranscriber(str(deployable.path), target)

    def evaluate(self, deployable: Artifact, loaded: LoadedModel, target: Target,
                 utterances: Sequence[Utterance], on_timed: OnTimed) -> Evaluation:
        # The child stamps its own timed window (timed_started_at/finished_at among its columns), so `on_timed`
        # is not called here; its printed output is whisper.cpp's log, which the row does not keep.
        evaluation, _output = run_isolated(evaluate_in_child, str(deployable.path), target, list(utterances))
        return evaluation

    def model_size_bytes(self, deployable: Artifact) -> int:
        return deployable.artifact_bytes
