"""Trial room: one self-contained quantize-and-evaluate unit, runnable on any worker, and its result rows."""
from __future__ import annotations

import copy
import datetime as dt
import json
import os
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from workers.costs import cost_columns
from workers.datasets import DatasetConfig, Utterance, load_utterances
from workers.device import Device
from workers.drift import Reference, drift_columns, reference
from workers.evaluate import EvalConfig, evaluate, peak_memory, run_pass, serialized_bytes
from workers.hardware import Hardware
from workers.logs import TrialLog, captured
from workers.models import LoadedModel, ModelConfig, load_model
from workers.models.families import FAMILIES
from workers.quantizers import QuantizationConfig, quantizer_for
from workers.quantizers.base import Calibrate, QuantizedModel

TRACEBACK_LINES = 12


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

    def describe(self) -> dict[str, Any]:
        """The trials-table columns that say what was run (known before it runs)."""
        q = self.quantization
        described = q.describe()
        return {
            "sweep": self.sweep, "trial_id": self.trial_id, "config": self.config,
            "model": self.model.name, "model_source": self.model.source, "family": self.model.family,
            "quantization": q.label(), "library": q.library, **described.__dict__,
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
class WorkerCache:
    """What a worker process keeps between trials: each model read from disk once, each dataset decoded once."""

    models: dict[ModelConfig, LoadedModel] = field(default_factory=dict)
    baseline_bytes: dict[ModelConfig, int] = field(default_factory=dict)
    datasets: dict[DatasetConfig, list[Utterance]] = field(default_factory=dict)
    # The last quantized model: trials of one quantization on several datasets quantize once (one kept, for memory).
    last_quantized: tuple[tuple, QuantizedModel, float] | None = None
    model_loads: int = 0
    # (issue 9) the float model's greedy ids and log-probs per (model, dataset, eval settings), for KL
    references: dict[tuple, Reference] = field(default_factory=dict)

    def model(self, config: ModelConfig) -> tuple[LoadedModel, bool]:
        reused = config in self.models
        if not reused:
            self.models[config] = load_model(config)
            self.model_loads += 1
            self.baseline_bytes[config] = serialized_bytes(self.models[config].model)
        return self.models[config], reused

    def quantized(self, trial: Trial, device: Device,
                  quantize: Callable[[], QuantizedModel]) -> tuple[QuantizedModel, float, bool]:
        """(quantized model, seconds its quantization took, whether it was reused from an earlier trial)."""
        key = (trial.model, trial.quantization, trial.calibration, device.torch_device)
        if self.last_quantized and self.last_quantized[0] == key:
            return self.last_quantized[1], self.last_quantized[2], True
        self.last_quantized = None  # free the previous one before building the next
        started = time.perf_counter()
        quantized = quantize()
        self.last_quantized = (key, quantized, time.perf_counter() - started)
        return quantized, self.last_quantized[2], False

    def reference(self, trial: Trial, loaded: LoadedModel) -> Reference:
        key = (trial.model, trial.dataset, trial.eval)
        if key not in self.references:
            self.references[key] = reference(trial.model.family, loaded.model, loaded.processor,
                                             self.utterances(trial.dataset), trial.eval, trial.dataset.language)
        return self.references[key]

    def utterances(self, config: DatasetConfig) -> list[Utterance]:
        if config not in self.datasets:
            self.datasets[config] = load_utterances(config)
        return self.datasets[config]


def run_trial(trial: Trial, hardware: Hardware, cache: WorkerCache, exclusive: bool = True) -> TrialOutcome:
    """Run one trial; never raises: an exception becomes a `failed` row with its error.

    `exclusive` says the caller holds the device alone for the whole trial (its timing token).
    """
    device = hardware.device()
    row: dict[str, Any] = trial.describe() | where_it_ran(hardware, device)
    row.update(started_at=now(), run_id=uuid.uuid4().hex)
    threads = trial.eval.threads or hardware.cores
    torch.set_num_threads(threads)
    row.update(threads=threads, timing_exclusive=exclusive)
    log = TrialLog()
    utterance_rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    with captured(log):
        try:
            quantizer = quantizer_for(trial.quantization)
            reason = quantizer.supports(device) or quantizer.missing()
            if reason:
                row.update(status="unsupported", error=reason)
            else:
                utterance_rows = _measure(trial, device, cache, row)
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
        "isa_flags": ",".join(hardware.isa_flags), "device": device.torch_device, "host": hardware.host,
        "versions": json.dumps(hardware.versions, sort_keys=True), "cores": ",".join(map(str, cores)),
    }


def _measure(trial: Trial, device: Device, cache: WorkerCache, row: dict[str, Any]) -> list[dict]:
    loaded, reused = cache.model(trial.model)
    utterances = cache.utterances(trial.dataset)
    calibration = cache.utterances(trial.calibration) if trial.calibration else None
    row.update(load_s=loaded.load_s, model_reused=reused, baseline_size_bytes=cache.baseline_bytes[trial.model])
    with peak_memory(device.torch_device) as peak:
        quantized, row["quantize_s"], row["quantized_reused"] = cache.quantized(
            trial, device, lambda: _quantize(trial, device, loaded, calibration))
        transcriber = FAMILIES[trial.model.family].transcriber(quantized.model, loaded.processor,
                                                               device.torch_device, trial.eval, trial.dataset.language)

        def on_timed(starting: bool) -> None:
            row["timed_started_at" if starting else "timed_finished_at"] = now()

        started = time.perf_counter()
        evaluation = evaluate(transcriber, utterances, trial.eval, on_timed)
        row["eval_s"] = time.perf_counter() - started
    row.update(peak)
    row.update(evaluation.columns)
    row.update(
        quantized_modules=quantized.quantized_modules, quantized_params=quantized.quantized_params,
        total_params=quantized.total_params,
        quantized_param_share=quantized.quantized_params / quantized.total_params,
        model_size_bytes=serialized_bytes(quantized.model),
    )
    row["size_reduction"] = 1 - row["model_size_bytes"] / row["baseline_size_bytes"]
    row["calibrate_s"] = quantized.calibrate_s
    # (issue 9) drift from the float model and the analytic costs, after (and outside) the measured passes
    row.update(drift_columns(cache.reference(trial, loaded), trial.model.family, quantized.model,
                             loaded.processor, utterances))
    row.update(cost_columns(trial.model.family, loaded.model, quantized, trial.quantization.describe(),
                            trial.quantization.modules, row["encoder_windows"], row["decoded_tokens"]))
    return evaluation.utterance_rows


def _quantize(trial: Trial, device: Device, loaded: LoadedModel, calibration: list[Utterance] | None) -> QuantizedModel:
    """A fresh copy of the float model, on the device, quantized (calibrated first for static schemes)."""
    model = copy.deepcopy(loaded.model).to(device.torch_device)
    spent: list[float] = []
    calibrate = _calibrator(trial, device, loaded, model, calibration, spent) if calibration is not None else None
    quantized = quantizer_for(trial.quantization).quantize(model, device, calibrate)
    quantized.calibrate_s = sum(spent) if spent else None
    return quantized


def _calibrator(trial: Trial, device: Device, loaded: LoadedModel, model: torch.nn.Module,
                calibration: list[Utterance], spent: list[float]) -> Calibrate:
    """Runs the model being quantized over the calibration split (never the evaluation audio)."""
    transcriber = FAMILIES[trial.model.family].transcriber(model, loaded.processor, device.torch_device,
                                                           trial.eval, trial.calibration.language)
    clips = [u for u in calibration if u.audio is not None]

    def calibrate(m: torch.nn.Module) -> None:
        started = time.perf_counter()
        transcriber.use(m)
        run_pass(transcriber, clips, trial.eval.batch_size)
        spent.append(time.perf_counter() - started)

    return calibrate
