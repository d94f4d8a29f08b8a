"""Runtime room, common part: the deployable a quantization produces and what a runtime does with it.

A torch quantizer's deployable is a module (QuantizedModel); an exporter's is an `Artifact`, files on disk
that only its runtime runs. A runtime hands evaluation a Transcriber over its deployable, and says how big
the deployable is; evaluation, scoring and rows are the same for every runtime.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from workers.datasets import Utterance
from workers.device import Device
from workers.evaluate import EvalConfig, Evaluation, Transcriber
from workers.quantizers.base import Artifact, Calibration, Exporter, QuantizedModel

if TYPE_CHECKING:
    from workers.models import LoadedModel


Deployable = QuantizedModel | Artifact


def build_artifact(exporter: Exporter, loaded: LoadedModel, calibration: Calibration | None = None) -> Artifact:
    """The exporter's artifact in a fresh temporary directory that lives as long as the artifact."""
    workdir = tempfile.TemporaryDirectory(prefix="quantsweep-artifact-")
    # exporters without a static scheme take no calibration argument
    artifact = (exporter.export(loaded, Path(workdir.name), calibration) if calibration is not None
                else exporter.export(loaded, Path(workdir.name)))
    artifact.workdir = workdir
    return artifact


@dataclass(frozen=True)
class Target:
    """How and where a deployable is evaluated: the trial's eval settings, language, device and threads."""

    device: Device
    config: EvalConfig
    language: str
    threads: int


OnTimed = Callable[[bool], None]


class Runtime(Protocol):
    name: str
    front_end: str  # what computes the log-mel features the model sees

    def transcriber(self, deployable: Any, loaded: LoadedModel, target: Target) -> Transcriber:
        """What transcribes with the deployable in this process (the isolated memory pass uses it)."""

    def evaluate(self, deployable: Any, loaded: LoadedModel, target: Target, utterances: Sequence[Utterance],
                 on_timed: OnTimed) -> Evaluation:
        """evaluate() over a transcriber of this runtime (in this process or an isolated child)."""

    def model_size_bytes(self, deployable: Any) -> int:
        """The deployable's size as deployed: the trials table's `model_size_bytes`."""
