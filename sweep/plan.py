"""Plan room: grid expansion, exclusions, support decisions, stable trial ids and the resume diff."""
from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sweep.spec import Spec, SpecError
from workers.dataset_content import source_fingerprint
from workers.datasets import DatasetConfig, DatasetError
from workers.device import HW_CLASSES, Device
from workers.evaluate import MEASUREMENT_CHOICES, EvalConfig
from workers.hardware import Placement
from workers.models import ModelConfig
from workers.models.families import ModelUnavailable, family_of, with_family_defaults
from workers.backends import library_for
from workers.backends.torch.none import NoneConfig
from workers.trial import Trial

# A trial needing calibration names a dataset by `calibration_dataset`; these exist without being declared.
BUILTIN_CALIBRATION = {
    "samples-calibration": DatasetConfig(name="samples-calibration", source="samples", split="calibration"),
    "synthetic-calibration": DatasetConfig(name="synthetic-calibration", source="synthetic", split="calibration"),
}
# The torch device a class runs on, for support decisions made before any node is asked.
CLASS_DEVICES = {"cuda": "cuda:0", "apple": "mps", "x86-cpu": "cpu", "arm-cpu": "cpu"}


def trial_id(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def canonical(parts: dict[str, Any]) -> str:
    """Key order, whitespace and YAML style do not change it; defaults are written out."""
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


@dataclass
class Plan:
    trials: list[Trial]  # runnable, in run order
    unsupported: list[tuple[Trial, str]]  # decided at plan time, recorded without running
    excluded: int = 0
    unplaced: list[str] = field(default_factory=list)  # targeted classes that have no live node

    def counts_by_class(self) -> Counter[str]:
        return Counter(t.hardware for t in self.trials)


def hardware_targets(spec: Spec, local_class: str, present: list[str]) -> list[str]:
    """`local` is the driver's own class; `all` every class with a live node; a class or chip pattern itself."""
    targets: list[str] = []
    for target in spec.hardware:
        expanded = {"local": [local_class], "all": present or [local_class]}.get(target, [target])
        targets += [t for t in expanded if t not in targets]
    return targets


def _calibration(spec: Spec, name: str, evaluated: DatasetConfig, index: int, source: str) -> DatasetConfig:
    known = {d.name: d for d in spec.calibration} | BUILTIN_CALIBRATION
    if name not in known:
        raise SpecError(source, [f"quantization[{index}].calibration_dataset: {name!r} is not a calibration dataset "
                                   f"({', '.join(sorted(known))}); declare it under `calibration`"])
    chosen = known[name]
    if chosen.model_dump(exclude={"name", "max_utterances"}) == evaluated.model_dump(exclude={"name", "max_utterances"}):
        raise SpecError(source, [f"quantization[{index}].calibration_dataset: {name!r} is the evaluation dataset "
                                   f"{evaluated.name!r}; calibrate on a distinct split"])
    return chosen


def _excluded(spec: Spec, values: dict[str, str]) -> bool:
    for rule in spec.exclude:
        given = {k: v for k, v in rule.model_dump().items() if v is not None}
        if all(fnmatch.fnmatchcase(values[k], pattern) for k, pattern in given.items()):
            return True
    return False


def _unset_measurement_choices(config: EvalConfig) -> set[str]:
    """What is measured beside the transcripts, at its default, stays out of the trial id (ids of sweeps planned
    before these choices existed are unchanged, and resume finds their rows); a time limit never enters it."""
    return {"trial_timeout_s"} | {name for name in MEASUREMENT_CHOICES
                                  if getattr(config, name) == EvalConfig.model_fields[name].default}


def expand(spec: Spec, local_class: str, present: list[str] | None = None, source: str = "<spec>") -> Plan:
    """The grid in run order (grouped by model so a worker reuses it), split into runnable and unsupported."""
    present = present if present is not None else [local_class]
    eval_json = spec.eval.model_dump(mode="json", exclude=_unset_measurement_choices(spec.eval))
    models = [(m, m.model_dump(mode="json")) for m in _resolved_models(spec, str(source))]
    datasets = [
        (d, dataset_identity(d, f"datasets[{i}]", str(source)))
        for i, d in enumerate(
            ds.model_copy(update={"max_utterances": ds.max_utterances or spec.eval.max_utterances})
            for ds in spec.datasets
        )
    ]
    targets = hardware_targets(spec, local_class, present)
    trials, unsupported, excluded, seen = [], [], 0, set()
    for (model, model_json), (qi, quant), (dataset, dataset_json), target in itertools.product(
        models, enumerate(spec.quantization), datasets, targets
    ):
        quant = with_family_defaults(quant, model.family)
        values = {"model": model.name, "quantization": quant.label(), "library": quant.library,
                  "scheme": quant.describe().scheme, "dataset": dataset.name, "hardware": target}
        if _excluded(spec, values):
            excluded += 1
            continue
        calibration = None
        if quant.needs_calibration():
            calibration = _calibration(spec, quant.calibration_dataset, dataset, qi, str(source)).model_copy(
                update={"max_utterances": quant.calibration_utterances})
        text = canonical({
            "model": model_json, "quantization": quant.model_dump(mode="json"), "dataset": dataset_json,
            "calibration": dataset_identity(calibration, f"quantization[{qi}].calibration_dataset", str(source))
            if calibration else None,
            "hardware": target, "eval": eval_json,
        })
        trial = Trial(trial_id(text), spec.sweep, model, quant, dataset, target, spec.eval, text, calibration)
        if trial.trial_id in seen:
            continue  # two spec entries that mean the same config are one trial
        seen.add(trial.trial_id)
        reason = support_reason(trial)
        if reason:
            unsupported.append((trial, reason))
        else:
            trials.append(trial)
    unplaced = sorted({t.hardware for t in trials if t.hardware in HW_CLASSES and t.hardware not in present})
    return Plan(trials, unsupported, excluded, unplaced)


def is_baseline(trial: Trial) -> bool:
    """The run every other trial of its model, dataset and eval settings is compared with (sql/baselines.sql)."""
    return trial.quantization.library == "none" and trial.quantization.describe().scheme == "fp32"


def baseline_for(trial: Trial, placement: Placement) -> Trial:
    """The fp32 run of the trial's model, dataset and eval settings pinned to one chip and host group; the
    placement is part of its id, so a resumed run finds it."""
    parts = json.loads(trial.config)
    quantization = with_family_defaults(NoneConfig(), trial.model.family)
    parts.update(quantization=quantization.model_dump(mode="json"), calibration=None, hardware=placement.hw_class,
                 placement=placement.as_config())
    text = canonical(parts)
    return Trial(trial_id(text), trial.sweep, trial.model, quantization, trial.dataset, placement.hw_class,
                 trial.eval, text, placement=placement)


def dataset_identity(config: DatasetConfig, where: str, source: str) -> dict[str, Any]:
    """A dataset as its trials' ids hash it: its fields, and its content where its files can change under one
    name (workers/dataset_content.py); a dataset that cannot be read is refused here, before anything runs."""
    try:
        content = source_fingerprint(config)
    except DatasetError as exc:
        raise SpecError(source, [f"{where}: {exc}"]) from None
    return config.model_dump(mode="json") | ({"content": content} if content else {})


def _resolved_models(spec: Spec, source: str) -> list[ModelConfig]:
    """Each model with its family decided (the spec's, or its checkpoint's config), so trials and ids carry it."""
    resolved = []
    for index, model in enumerate(spec.models):
        try:
            resolved.append(model.model_copy(update={"family": family_of(model)}))
        except ModelUnavailable as exc:
            raise SpecError(source, [f"models[{index}].family: {exc}; set `family:` to plan without it"]) from None
    return resolved


def support_reason(trial: Trial) -> str | None:
    """The support matrix: the model's family, the target class and the model's shapes; chip targets on the worker."""
    quantizer = library_for(trial.quantization)
    reason = quantizer.supports_family(trial.model.family)
    if reason:
        return reason
    if trial.hardware not in CLASS_DEVICES:
        return quantizer.supports_model(trial.model)
    return (quantizer.supports(Device(trial.hardware, CLASS_DEVICES[trial.hardware]))
            or quantizer.supports_model(trial.model))


@dataclass
class Diff:
    to_run: list[Trial]
    done: list[Trial]  # not run now: already `ok`/`unsupported`, or (retry_failed) not failed


def diff(trials: list[Trial], finished: dict[str, str], rerun: bool = False, retry_failed: bool = False,
         also_done: tuple[str, ...] = (), replan: set[str] | frozenset[str] = frozenset()) -> Diff:
    """What a run must still do: by default everything not `ok` nor `unsupported` (nor a status in `also_done`),
    and the `unsupported` trials in `replan` (their node lacked the library's package, which may be there now);
    `retry_failed` only the failed ones."""
    if rerun:
        return Diff(list(trials), [])
    to_run, done = [], []
    for trial in trials:
        status = finished.get(trial.trial_id)
        pending = (status == "failed" if retry_failed
                   else status not in ("ok", "unsupported", *also_done) or trial.trial_id in replan)
        (to_run if pending else done).append(trial)
    return Diff(to_run, done)
