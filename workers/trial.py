"""Trial room: one self-contained quantize-and-evaluate unit, runnable on any worker, and its result rows."""
from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import time
import traceback
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch

from workers.backends import QuantizationConfig, library_for, runtime_of
from workers.backends.base import Artifact, Deployable, QuantizedModel, Target
from workers.dataset_content import evaluated_hash
from workers.datasets import DatasetConfig, Utterance, load_utterances
from workers.deploy import eval_config, quantize
from workers.device import Device
from workers.evaluate import EvalConfig, serialized_bytes
from workers.hardware import Hardware, Placement
from workers.logs import TrialLog, captured
from workers.metrics import TRACKERS, not_measured, setting
from workers.metrics.base import Tracker, TrialContext
from workers.process_memory import allocated, model_mem_bytes
from workers.models import LoadedModel, ModelConfig, load_model
from workers.rungs import Kept, Rung

TRACEBACK_LINES = 12
PACKAGE_MISSING = "PackageMissing"  # error_type of an `unsupported` row whose node lacked the library's package
QUANTSWEEP_VERSION = importlib.metadata.version("quantsweep")


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
    placement: Placement | None = None  # pinned to this chip and host group (a baseline); None: any node of `hardware`

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
            "quantization": q.label(), "library": q.library, "runtime": library_for(q).runtime,
            **described.__dict__,
            "calibration_dataset": self.calibration.name if self.calibration else None,
            "calibration_utterances": self.calibration.max_utterances if self.calibration else None,
            "dataset": self.dataset.name, "dataset_revision": self.dataset.revision, "language": self.dataset.language,
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
    model_size_bytes: int  # the deployable's serialized size, read before its first pass (see `sized`)
    model_mem_bytes: int | None  # a torch model's resident tensor bytes, read then too; None for an artifact


def sized(deployable: Deployable, quantize_s: float, allocated_before: int) -> Quantized:
    """Sizes are read once, as the quantizer left the model: walking a state dict after a pass is not free of
    effects (bitsandbytes repacks 4-bit weights for its CPU kernel on the first pass and unpacks them for
    `state_dict`; the next pass on the unpacked weights transcribes garbage), and a reused model is run again."""
    module = deployable.model if isinstance(deployable, QuantizedModel) else None
    return Quantized(deployable, quantize_s, allocated_before, runtime_of(deployable).model_size_bytes(deployable),
                     model_mem_bytes(module) if module is not None else None)


@dataclass
class WorkerCache:
    """What a worker process keeps between trials: each model read from disk once, each dataset decoded once."""

    models: dict[ModelConfig, LoadedModel] = field(default_factory=dict)
    baseline_bytes: dict[ModelConfig, int] = field(default_factory=dict)
    datasets: dict[DatasetConfig, list[Utterance]] = field(default_factory=dict)
    hashes: dict[DatasetConfig, str] = field(default_factory=dict)  # dataset_hash of each decoded dataset
    # The last deployable: trials of one quantization on several datasets quantize once (one kept, for memory).
    last_quantized: tuple[tuple, Quantized] | None = None
    # what metrics keep between this worker's trials, by metric name (e.g. drift's float references)
    kept: dict[str, Any] = field(default_factory=dict)
    # (issue 14) racing trials' deployables, kept between their rungs within a memory budget
    raced: Kept = field(default_factory=Kept)

    def model(self, config: ModelConfig) -> tuple[LoadedModel, bool]:
        reused = config in self.models
        if not reused:
            self.models[config] = load_model(config)
            self.baseline_bytes[config] = serialized_bytes(self.models[config].model)
        return self.models[config], reused

    def quantized(self, trial: Trial, device: Device, build: Callable[[], Deployable]) -> tuple[Quantized, bool]:
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
        model = build()
        self.last_quantized = (key, sized(model, time.perf_counter() - started, allocated_before))
        if trial.rung is not None:
            self.raced.put((trial.trial_id, device.torch_device), self.last_quantized[1],
                           self.last_quantized[1].model_mem_bytes or 0)
        return self.last_quantized[1], False

    def utterances(self, config: DatasetConfig) -> list[Utterance]:
        if config not in self.datasets:
            self.datasets[config] = load_utterances(config)
        return self.datasets[config]

    def dataset_hash(self, config: DatasetConfig) -> str:
        """The evaluated content's hash (workers/dataset_content.py), once per dataset."""
        if config not in self.hashes:
            self.hashes[config] = evaluated_hash(self.utterances(config))
        return self.hashes[config]


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
            quantizer = library_for(trial.quantization)
            missing = quantizer.missing()
            reason = (quantizer.supports(device) or missing or quantizer.supports_model(trial.model)
                      or (trial.model.family and quantizer.supports_family(trial.model.family)))
            if reason:
                # a package missing on this node is no verdict on the library: resume plans the trial again
                row.update(status="unsupported", error=reason, error_type=PACKAGE_MISSING if reason == missing else None)
            else:
                utterance_rows = _measure(trial, hardware, cache, row, log)
                row["status"] = "ok"
        except Exception as exc:  # a trial's failure is a row, never the end of the sweep
            row.update(status="failed", error=error_text(exc), error_type=type(exc).__name__)
    row.update(compute_s=time.perf_counter() - started, finished_at=now(), log=log.text())
    if row["status"] == "ok":
        row["floor_s"] = (0.0 if row["model_reused"] else row["load_s"]) + row["warmup_s"] + row["timed_s"] + (
            0.0 if row["quantized_reused"] else row["quantize_s"])
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
    the metrics beside it; a metric that fails is NULL with its reason, never the trial's failure."""
    device = hardware.device()
    loaded, reused = cache.model(trial.model)
    utterances = cache.utterances(trial.dataset)
    if trial.rung is not None:
        row.update(race_dataset_utterances=len(utterances),
                   race_dataset_audio_s=sum(u.duration_s for u in utterances if u.audio is not None))
        utterances = trial.rung.chunk(utterances)
    calibration = cache.utterances(trial.calibration) if trial.calibration else None
    row.update(load_s=loaded.load_s, model_reused=reused, baseline_size_bytes=cache.baseline_bytes[trial.model],
               model_revision=loaded.revision, dataset_hash=cache.dataset_hash(trial.dataset))
    kept, row["quantized_reused"] = cache.quantized(trial, device, lambda: quantize(trial, device, loaded, calibration))
    deployable = kept.deployable
    row.update(quantize_s=kept.quantize_s, family=loaded.family)
    runtime = runtime_of(deployable)
    context = TrialContext(trial, hardware, device, cache, loaded, deployable, runtime, kept.allocated_before,
                           utterances, calibration, row, log)
    row.update(not_measured(trial.eval))
    trackers = [tracker(context, on) for name, tracker in TRACKERS.items()
                if (on := setting(trial.eval, name)) != "off"]

    def on_timed(starting: bool) -> None:
        row["timed_started_at" if starting else "timed_finished_at"] = now()
        for tracker in trackers:
            tracker.on_timed(starting)

    target = Target(device, eval_config(trial), trial.dataset.language, row["threads"])
    started = time.perf_counter()
    with ExitStack() as watching:
        for tracker in trackers:
            watching.enter_context(tracker.around_evaluation())
        evaluation = runtime.evaluate(deployable, loaded, target, utterances, on_timed)
    row["eval_s"] = time.perf_counter() - started
    row.update(evaluation.columns)
    row.update(
        runtime=runtime.name, front_end=runtime.front_end,
        artifact_bytes=deployable.artifact_bytes if isinstance(deployable, Artifact) else None,
        quantized_modules=deployable.quantized_modules, quantized_params=deployable.quantized_params,
        total_params=deployable.total_params,
        quantized_param_share=deployable.quantized_params / deployable.total_params,
        model_size_bytes=kept.model_size_bytes, model_mem_bytes=kept.model_mem_bytes,
        calibrate_s=deployable.calibrate_s, **(getattr(deployable, "calibration", None) or {}),
    )
    row["size_reduction"] = 1 - row["model_size_bytes"] / row["baseline_size_bytes"]
    for tracker in trackers:
        row.update(_measured(tracker))
    return evaluation.utterance_rows


def _measured(tracker: Tracker) -> dict[str, Any]:
    """A metric's columns and its seconds (`<metric>_s`); its failure is its NULL reason."""
    started = time.perf_counter()
    try:
        columns = tracker.measure()
    except Exception as exc:  # noqa: BLE001 - the trial's own numbers stand; this metric says why it has none
        columns = {tracker.null_reason: f"{tracker.name} failed: {type(exc).__name__}: {exc}"[:1000]}
    return columns | {f"{tracker.name}_s": time.perf_counter() - started}
