"""Deploy room: a trial's deployable (a quantized copy of the float model, or an exporter's artifact) and a
transcriber over it; the worker and the isolated memory child build it the same way."""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from workers.backends import library_for, runtime_of
from workers.backends.base import (Artifact, Calibration, Deployable, Exporter, Quantizer, Target,
                                  build_artifact)
from workers.calibration import CalibrationPlan, Calibrator, generated, teacher_forced, transcribed
from workers.datasets import Utterance
from workers.device import Device
from workers.evaluate import EvalConfig, Transcriber
from workers.hardware import Hardware
from workers.models import LoadedModel, load_model
from workers.models.families import FAMILIES, with_family_defaults
from workers.models.forcing import TEACHER_FORCING

if TYPE_CHECKING:
    from workers.trial import Trial


def eval_config(trial: Trial) -> EvalConfig:
    """A dataset scored by its leaderboard's normaliser says so; the others take the sweep's."""
    return trial.eval.model_copy(update={"normalizer": trial.dataset.normalizer or trial.eval.normalizer})


def quantize(trial: Trial, device: Device, loaded: LoadedModel, calibration: list[Utterance] | None) -> Deployable:
    """A fresh copy of the float model, on the device, quantized (calibrated first for static schemes);
    or, for an exporter, its artifact written from the float model (which it only reads)."""
    library = library_for(with_family_defaults(trial.quantization, loaded.family))
    if isinstance(library, Exporter):
        clips = (Calibration([u.audio for u in calibration if u.audio is not None], trial.calibration.language)
                 if calibration is not None and trial.calibration is not None else None)
        return build_artifact(library, loaded, clips)
    assert isinstance(library, Quantizer)
    model = copy.deepcopy(loaded.model).to(device.torch_device)
    calibrator = (_calibrator(trial, device, loaded, model, calibration, library.config.calibration_plan())
                  if calibration is not None else None)
    quantized = library.quantize(model, device, calibrator)
    if calibrator is not None and calibrator.seconds:
        quantized.calibrate_s = sum(calibrator.seconds)
        quantized.calibration = calibrator.columns()
    return quantized


def _calibrator(trial: Trial, device: Device, loaded: LoadedModel, model: torch.nn.Module,
                calibration: list[Utterance], plan: CalibrationPlan) -> Calibrator:
    """Runs the model being quantized over the calibration split (never the evaluation audio), as `plan` says;
    a family that cannot be teacher-forced calibrates with `generate`, and its row says so."""
    clips = [u for u in calibration if u.audio is not None]
    forcing = TEACHER_FORCING.get(loaded.family)
    transcriber = FAMILIES[loaded.family].transcriber(model, loaded.processor, device.torch_device,
                                                      trial.eval, trial.calibration.language)
    check = transcribed(transcriber, clips, trial.eval.batch_size,
                        trial.calibration.normalizer or trial.eval.normalizer)
    if plan.calibration_pass == "teacher-forced" and forcing is not None:
        return Calibrator(plan, teacher_forced(forcing, loaded.processor, clips, trial.eval,
                                               trial.calibration.language, plan), check)
    plan = replace(plan, calibration_pass="generate")
    positions = forcing.positions(model) if forcing is not None else None
    return Calibrator(plan, generated(transcriber, clips, trial.eval.batch_size, positions, plan), check)


def fresh_transcriber(trial: Trial, hardware: Hardware, calibration: list[Utterance] | None,
                      artifact: Artifact | None) -> Transcriber:
    """A transcriber over a freshly loaded and quantized model (or the artifact) that nothing else holds."""
    device = hardware.device()
    loaded = load_model(trial.model)
    # A torch model is quantized as a copy in anonymous memory, as in the worker: the loaded weights are
    # pages of the mapped checkpoint file, resident only where touched, which would make a memory figure
    # depend on what quantization read. The loaded model is dropped on return.
    deployable = artifact or quantize(trial, device, loaded, calibration)
    target = Target(device, eval_config(trial), trial.dataset.language, trial.eval.threads or hardware.cores)
    return runtime_of(deployable).transcriber(deployable, loaded, target)
