"""Metric room, common part: a tracker measures one thing beside a trial's floor and owns its columns.

The floor of a trial is its model loaded once per worker, its quantization (calibration included), the warm-up
and the timed passes; evaluation produces accuracy and speed there. Everything else is a tracker: it may watch
the evaluation (`around_evaluation`, `on_timed`), then `measure` returns its columns. A tracker never costs the
trial its numbers: if it raises, its columns are NULL and its `null_reason` column says why; its seconds are its
own `<name>_s` column. A spec switches it with `eval.<name>` where EvalConfig has that field (`off`: not measured).
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
from torch import nn

from workers.backends.base import Deployable, QuantizedModel, Runtime
from workers.datasets import Utterance
from workers.device import Device
from workers.hardware import Hardware
from workers.logs import TrialLog
from workers.models import LoadedModel

if TYPE_CHECKING:
    from workers.trial import Trial, WorkerCache


@dataclass
class TrialContext:
    """What a tracker may look at: the trial, where it runs, its models and data, and its row so far."""

    trial: Trial
    hardware: Hardware
    device: Device
    cache: WorkerCache
    loaded: LoadedModel  # the float model (the worker's, shared by its trials: read it, never change it)
    deployable: Deployable
    runtime: Runtime
    allocated_before: int  # device allocator bytes before the deployable existed
    utterances: list[Utterance]
    calibration: list[Utterance] | None
    row: dict[str, Any]  # the trials row: its evaluation columns are in it when `measure` runs
    log: TrialLog

    @property
    def module(self) -> nn.Module | None:
        """The quantized torch module, or None for a runtime's artifact."""
        return self.deployable.model if isinstance(self.deployable, QuantizedModel) else None


class Tracker:
    """One metric. Subclasses set `name`, `columns` and `null_reason` (one of `columns`)."""

    name: ClassVar[str]
    columns: ClassVar[tuple[pa.Field, ...]]
    null_reason: ClassVar[str]

    def __init__(self, context: TrialContext, setting: str):
        self.context, self.setting = context, setting

    def around_evaluation(self) -> AbstractContextManager[Any]:
        """Entered before the evaluation starts, left after it ends."""
        return nullcontext()

    def on_timed(self, starting: bool) -> None:
        """Called as the timed passes start (True) and end (False), after the warm-up."""

    def measure(self) -> dict[str, Any]:
        """This tracker's columns, after the evaluation."""
        raise NotImplementedError
