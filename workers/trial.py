"""Trial room: one self-contained quantize-and-evaluate unit, runnable on any worker, and its result rows."""
from __future__ import annotations

import copy
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import time
import traceback
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from workers.costs import cost_columns
from workers.datasets import DatasetConfig, Utterance, load_utterances
from workers.device import Device
from workers.drift import Reference, drift_columns, on_node, reference
from workers.evaluate import EvalConfig, Transcriber, run_pass, serialized_bytes
from workers.hardware import Hardware
from workers.isolation import run_isolated
from workers.logs import TrialLog, captured
from workers.memory import (CPU_KIND, NO_RESET_REASON, InlineMemory, allocated, device_peak, fix_mmap_threshold,
                            model_mem_bytes, release_freed_memory, reset_rss_peak, rss_bytes, rss_peak)
from workers.models import LoadedModel, ModelConfig, load_model
from workers.models.families import FAMILIES, with_family_defaults
from workers.quantizers import QuantizationConfig, quantizer_for
from workers.quantizers.base import Artifact, Calibrate, Exporter, Quantizer, QuantizedModel
from workers.runtimes import runtime_of
from workers.runtimes.base import Deployable, Target, build_artifact
from workers.rungs import Kept, Rung

TRACEBACK_LINES = 12
QUANTSWEEP_VERSION = importlib.metadata.version("quantsweep")
# The eval settings a float reference transcript depends on (not timing or what else is measured).
REFERENCE_EVAL = {"num_beams", "max_new_tokens", "max_utterances"}
# An isolated memory pass runs one batch; longer than this many times the whole evaluation means it hangs.
MEMORY_PASS_TIMEOUT_FACTOR = 3.0
MEMORY_PASS_MIN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Trial:
    """Everything a worker needs to run one trial; `config` is the canonical JSON the id hashes."""

    trial_id: str
    sweep: str
    model: ModelConfig
    quantization: QuantizationConfig
    dataset: DatasetConfig
    hardware: str  # the targeted hardware class
    eval: EvalConfig
    config: str
    calibration: DatasetConfig | None = None
    rung: Rung | None = None  # (issue 14) an adaptive race's rung: score only its chunk of the dataset

    def describe(self) -> dict[str, Any]:
        """The trials-table columns that say what was run (known before it runs)."""
        q = self.quantization
        described = q.describe()
        config = json.loads(self.config)
        eval_config = json.dumps(config.pop("eval", None), sort_keys=True, separators=(",", ":"))
        setup = json.dumps(config, sort_keys=True, separators=(",", ":"))
        return {
            "sweep": self.sweep, "trial_id": self.trial_id, "config": self.config, "eval_config": eval_config,
            "setup_id": hashlib.sha256(setup.encode()).hexdigest()[:16],
            "model": self.model.name, "model_source": self.model.source, "family": self.model.family,
            "quantization": q.label(), "library": q.library, "runtime": quantizer_for(q).runtime,
            **described.__dict__,
            "calibration_dataset": self.calibration.name if self.calibration else None,
            "calibration_utterances": self.calibration.max_utterances if self.calibration else None,
            "dataset": self.dataset.name, "language": self.dataset.language,
            "batch_size": self.eval.batch_size, "num_beams": self.eval.num_beams,
            "timing_repeats": self.eval.timing_repeats, "hw_class": self.hardware,
        }


@dataclass
class TrialOutcome:
    row: dict[str, Any]
    utterances: list[dict[str, Any]]
    written: bool = False  # already in the results directory (the worker wrote it)

    @property
    def status(self) -> str:
        return self.row["status"]


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def error_text(exc: BaseException) -> str:
    tail = "".join(traceback.format_exception(exc)).splitlines()[-TRACEBACK_LINES:]
    return f"{type(exc).__name__}: {exc}\n" + "\n".join(tail)


@dataclass
class Quantized:
    """A quantized model as a worker keeps it: how long quantizing took and what the device held before it."""

    deployable: Deployable
    quantize_s: float
    allocated_before: int  # device allocator bytes before the model existed (GPU memory is measured above it)


@dataclass
class WorkerCache:
    """What a worker process keeps between trials: each model read from disk once, each dataset decoded once."""

    models: dict[ModelConfig, LoadedModel] = field(default_factory=dict)
    baseline_bytes: dict[ModelConfig, int] = field(default_factory=dict)
    datasets: dict[DatasetConfig, list[Utterance]] = field(default_factory=dict)
    # The last deployable: trials of one quantization on several datasets quantize once (one kept, for memory).
    last_quantized: tuple[tuple, Quantized] | None = None
    # (issue 9) the float model's greedy ids and log-probs per (model, dataset, eval settings), for KL
    references: dict[tuple, Reference] = field(default_factory=dict)
    # (issue 14) racing trials' deployables, kept between their rungs within a memory budget
    raced: Kept = field(default_factory=Kept)

    def model(self, config: ModelConfig) -> tuple[LoadedModel, bool]:
        reused = config in self.models
        if not reused:
            self.models[config] = load_model(config)
            self.baseline_bytes[config] = serialized_bytes(self.models[config].model)
        return self.models[config], reused

    def quantized(self, trial: Trial, device: Device, quantize: Callable[[], Deployable]) -> tuple[Quantized, bool]:
        """The trial's deployable (quantized model or artifact) and whether it was reused from an earlier trial."""
        key = (trial.model, trial.quantization, trial.calibration, device.torch_device)
        if self.last_quantized and self.last_quantized[0] == key:
            return self.last_quantized[1], True
        if trial.rung is not None and (kept := self.raced.get((trial.trial_id, device.torch_device))) is not None:
            self.last_quantized = (key, kept)
            return kept, True
        self.last_quantized = None  # free the previous one before building the next
        allocated_before = allocated(device.torch_device)
        started = time.perf_counter()
        model = quantize()
        self.last_quantized = (key, Quantized(model, time.perf_counter() - started, allocated_before))
        if trial.rung is not None:
            resident = model_mem_bytes(model.model) if isinstance(model, QuantizedModel) else 0
            self.raced.put((trial.trial_id, device.torch_device), self.last_quantized[1], resident)
        return self.last_quantized[1], False

    def reference(self, trial: Trial, loaded: LoadedModel, device: Device) -> Reference:
        """The float model's greedy ids and log-probs on the trial's device, computed once per node."""
        key = (trial.model, trial.dataset, trial.eval, device.torch_device)
        if key not in self.references:
            def compute() -> Reference:
                model = loaded.model if device.is_cpu else copy.deepcopy(loaded.model).to(device.torch_device)
                return reference(loaded.family, model, loaded.processor, self.utterances(trial.dataset), trial.eval,
                                 trial.dataset.language)

            digest = hashlib.sha256(json.dumps([trial.model.model_dump(mode="json"),
                                                trial.dataset.model_dump(mode="json"),
                                                trial.eval.model_dump(mode="json", include=REFERENCE_EVAL),
                                                device.torch_device, QUANTSWEEP_VERSION]).encode()).hexdigest()[:20]
            self.references[key] = on_node(digest, compute)
        return self.references[key]

    def utterances(self, config: DatasetConfig) -> list[Utterance]:
        if config not in self.datasets:
            self.datasets[config] = load_utterances(config)
        return self.datasets[config]


def run_trial(trial: Trial, hardware: Hardware, cache: WorkerCache, exclusive: bool = True,
              runners_on_node: int = 1) -> TrialOutcome:
    """Run one trial; never raises: an exception becomes a `failed` row with its error.

    `exclusive` says the caller holds the device alone for the whole trial (its timing token) and no other
    timed trial shares its cores. The node's cores are divided among its `runners_on_node` runners (one per
    GPU on a multi-GPU node); a spec's `threads` that oversubscribes them makes the timing not exclusive.
    """
    device = hardware.device()
    row: dict[str, Any] = trial.describe() | where_it_ran(hardware, device)
    row.update(started_at=now(), run_id=uuid.uuid4().hex)
    threads = trial.eval.threads or max(1, hardware.cores // runners_on_node)
    torch.set_num_threads(threads)
    row.update(threads=threads, timing_exclusive=exclusive and threads * runners_on_node <= hardware.cores)
    log = TrialLog()
    utterance_rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with captured(log):
        try:
            quantizer = quantizer_for(trial.quantization)
            reason = (quantizer.supports(device) or quantizer.missing() or quantizer.supports_model(trial.model)
                      or (trial.model.family and quantizer.supports_family(trial.model.family)))
            if reason:
                row.update(status="unsupported", error=reason)
            else:
                utterance_rows = _measure(trial, hardware, cache, row, log)
                row["status"] = "ok"
        except Exception as exc:  # a trial's failure is a row, never the end of the sweep
            row.update(status="failed", error=error_text(exc), error_type=type(exc).__name__)
    row.update(compute_s=time.perf_counter() - started, finished_at=now(), log=log.text())
    for u in utterance_rows:
        u.update(sweep=trial.sweep, trial_id=trial.trial_id, run_id=row["run_id"])
    return TrialOutcome(row, utterance_rows)


def where_it_ran(hardware: Hardware, device: Device) -> dict[str, Any]:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {
        "hw_class": hardware.hw_class, "hw_chip": hardware.chip, "hw_simulated": hardware.simulated,
        "isa_flags": ",".join(hardware.isa_flags), "device": hardware.device_name, "host": hardware.host,
        "versions": json.dumps(hardware.versions, sort_keys=True), "cores": ",".join(map(str, cores)),
        "host_group": hardware.host_group or hardware.host, "quantsweep_version": QUANTSWEEP_VERSION,
    }


def _measure(trial: Trial, hardware: Hardware, cache: WorkerCache, row: dict[str, Any], log: TrialLog) -> list[dict]:
    """The floor of a trial (its model loaded once per worker, one quantization, warm-up and timed passes), then
    what is measured beside it; a measurement beside the floor that fails is NULL with its reason, never the
    trial's failure."""
    device = hardware.device()
    loaded, reused = cache.model(trial.model)
    utterances = cache.utterances(trial.dataset)
    if trial.rung is not None:
        row.update(race_dataset_utterances=len(utterances),
                   race_dataset_audio_s=sum(u.duration_s for u in utterances if u.audio is not None))
        utterances = trial.rung.chunk(utterances)
    calibration = cache.utterances(trial.calibration) if trial.calibration else None
    row.update(load_s=loaded.load_s, model_reused=reused, baseline_size_bytes=cache.baseline_bytes[trial.model])
    kept, row["quantized_reused"] = cache.quantized(trial, device, lambda: _quantize(trial, device, loaded, calibration))
    deployable = kept.deployable
    row.update(quantize_s=kept.quantize_s, family=loaded.family)
    runtime = runtime_of(deployable)
    target = Target(device, _eval_config(trial), trial.dataset.language, row["threads"])
    module = deployable.model if isinstance(deployable, QuantizedModel) else None
    inline = InlineMemory() if device.is_cpu and trial.eval.memory == "inline" else None

    def on_timed(starting: bool) -> None:
        row["timed_started_at" if starting else "timed_finished_at"] = now()
        if inline is not None:
            inline.on_timed(starting)

    # torch's allocator sees a torch model's GPU memory; a runtime's own allocations it does not
    on_gpu = not device.is_cpu and module is not None and trial.eval.memory != "off"
    if inline is not None:
        inline.opening()
    started = time.perf_counter()
    with device_peak(device.torch_device, kept.allocated_before) if on_gpu else nullcontext({}) as peak:
        evaluation = runtime.evaluate(deployable, loaded, target, utterances, on_timed)
    row["eval_s"] = time.perf_counter() - started
    row.update(evaluation.columns)
    row.update(
        runtime=runtime.name, front_end=runtime.front_end,
        artifact_bytes=deployable.artifact_bytes if isinstance(deployable, Artifact) else None,
        quantized_modules=deployable.quantized_modules, quantized_params=deployable.quantized_params,
        total_params=deployable.total_params,
        quantized_param_share=deployable.quantized_params / deployable.total_params,
        model_size_bytes=runtime.model_size_bytes(deployable),
        model_mem_bytes=model_mem_bytes(module) if module is not None else None,
    )
    row["size_reduction"] = 1 - row["model_size_bytes"] / row["baseline_size_bytes"]
    if module is not None:
        row["calibrate_s"] = deployable.calibrate_s
    if "peak_mem_bytes" not in row:  # a runtime evaluated in an isolated child measured it there
        row.update(_beside("memory", "peak_mem_null_reason", lambda: _memory(
            trial, hardware, row, peak, inline, deployable, utterances, calibration, log)))
    row.update(_beside("drift", "kl_null_reason", lambda: _drift(trial, cache, loaded, device, module, utterances)))
    if module is not None:
        row.update(_beside("costs", "cost_null_reason", lambda: cost_columns(
            loaded.family, loaded.model, deployable, trial.quantization.describe(), trial.quantization.modules,
            row.get("encoder_windows"), row.get("decoded_tokens"))))
    else:
        row["cost_null_reason"] = f"the {runtime.name} runtime's layers are not torch modules to count"
    return evaluation.utterance_rows


def _beside(metric: str, reason_column: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """An optional measurement's columns and its seconds (`<metric>_s`); its failure is its NULL reason."""
    started = time.perf_counter()
    try:
        columns = measure()
    except Exception as exc:  # noqa: BLE001 - the trial's own numbers stand; this metric says why it has none
        columns = {reason_column: f"{metric} failed: {type(exc).__name__}: {exc}"[:1000]}
    return columns | {f"{metric}_s": time.perf_counter() - started}


def _memory(trial: Trial, hardware: Hardware, row: dict[str, Any], peak: dict[str, Any], inline: InlineMemory | None,
            deployable: Deployable, utterances: list[Utterance], calibration: list[Utterance] | None,
            log: TrialLog) -> dict[str, Any]:
    if trial.eval.memory == "off":
        return {"peak_mem_null_reason": "not measured (eval.memory: off)"}
    if peak:
        return peak  # a GPU's allocator peak, read around the evaluation
    if inline is not None:
        return inline.columns(row["model_mem_bytes"])
    if not hardware.device().is_cpu:
        return {"peak_mem_null_reason": f"the {row['runtime']} runtime's memory on {hardware.device_name} is not "
                                        "torch's allocator's to read"}
    # eval.memory: isolated. The worker holds cached models and datasets: memory is measured where only this
    # model lives. One calibration clip: a model's memory does not depend on what its static scales came from.
    artifact = replace(deployable, workdir=None) if isinstance(deployable, Artifact) else None
    timeout_s = max(MEMORY_PASS_MIN_TIMEOUT_S, MEMORY_PASS_TIMEOUT_FACTOR * (row["eval_s"] + row["quantize_s"]))
    measured, output = run_isolated(memory_pass, trial, hardware, memory_clips(utterances, trial.eval.batch_size),
                                    calibration and [u for u in calibration if u.audio is not None][:1], artifact,
                                    timeout_s=timeout_s)
    for line in output.splitlines():
        log.add(line)
    return measured


def _drift(trial: Trial, cache: WorkerCache, loaded: LoadedModel, device: Device, module: torch.nn.Module | None,
           utterances: list[Utterance]) -> dict[str, Any]:
    if trial.eval.drift == "off":
        return {"kl_null_reason": "not measured (eval.drift: off)"}
    if module is None:
        return {"kl_null_reason": f"the {quantizer_for(trial.quantization).runtime} runtime exposes no logits to compare"}
    return drift_columns(cache.reference(trial, loaded, device), loaded.family, module, loaded.processor, utterances)


def _eval_config(trial: Trial) -> EvalConfig:
    """A dataset scored by its leaderboard's normaliser says so; the others take the sweep's."""
    return trial.eval.model_copy(update={"normalizer": trial.dataset.normalizer or trial.eval.normalizer})


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
    run_pass(_deployed(trial, hardware, calibration, artifact), clips, trial.eval.batch_size)
    release_freed_memory()
    before = rss_bytes()
    transcriber = _deployed(trial, hardware, calibration, artifact)
    release_freed_memory()  # the loaded checkpoint and the float weights quantization replaced are gone
    if not reset_rss_peak():
        return {"peak_mem_null_reason": NO_RESET_REASON}
    run_pass(transcriber, clips, trial.eval.batch_size)
    return {"peak_mem_bytes": rss_peak() - before, "peak_mem_kind": CPU_KIND}


def _deployed(trial: Trial, hardware: Hardware, calibration: list[Utterance] | None,
              artifact: Artifact | None) -> Transcriber:
    """A transcriber over a freshly loaded and quantized model (or the artifact) that nothing else holds."""
    device = hardware.device()
    loaded = load_model(trial.model)
    # A torch model is quantized as a copy in anonymous memory, as in the worker: the loaded weights are
    # pages of the mapped checkpoint file, resident only where touched, which would make the figure depend
    # on what quantization read. The loaded model is dropped on return.
    deployable = artifact or _quantize(trial, device, loaded, calibration)
    target = Target(device, _eval_config(trial), trial.dataset.language, trial.eval.threads or hardware.cores)
    return runtime_of(deployable).transcriber(deployable, loaded, target)


def _quantize(trial: Trial, device: Device, loaded: LoadedModel, calibration: list[Utterance] | None) -> Deployable:
    """A fresh copy of the float model, on the device, quantized (calibrated first for static schemes);
    or, for an exporter, its artifact written from the float model (which it only reads)."""
    quantizer = quantizer_for(with_family_defaults(trial.quantization, loaded.family))
    if isinstance(quantizer, Exporter):
        return build_artifact(quantizer, loaded)
    assert isinstance(quantizer, Quantizer)
    model = copy.deepcopy(loaded.model).to(device.torch_device)
    spent: list[float] = []
    calibrate = _calibrator(trial, device, loaded, model, calibration, spent) if calibration is not None else None
    quantized = quantizer.quantize(model, device, calibrate)
    quantized.calibrate_s = sum(spent) if spent else None
    return quantized


def _calibrator(trial: Trial, device: Device, loaded: LoadedModel, model: torch.nn.Module,
                calibration: list[Utterance], spent: list[float]) -> Calibrate:
    """Runs the model being quantized over the calibration split (never the evaluation audio)."""
    transcriber = FAMILIES[loaded.family].transcriber(model, loaded.processor, device.torch_device,
                                                      trial.eval, trial.calibration.language)
    clips = [u for u in calibration if u.audio is not None]

    def calibrate(m: torch.nn.Module) -> None:
        started = time.perf_counter()
        transcriber.use(m)
        run_pass(transcriber, clips, trial.eval.batch_size)
        spent.append(time.perf_counter() - started)

    return calibrate
