"""CPU metric: processor seconds the trial's process spent in its timed passes (all its threads), and how many
cores that kept busy on average: what a deployment pays for, beside the wall-clock RTF."""
from __future__ import annotations

import resource
from typing import Any

import pyarrow as pa

from workers.metrics.base import Tracker


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuTracker(Tracker):
    name = "cpu"
    null_reason = "cpu_null_reason"
    columns = (
        pa.field("timed_cpu_s", pa.float64()),  # user + system seconds of the worker process over the timed passes
        pa.field("cpu_cores_busy", pa.float64()),  # timed_cpu_s / the timed passes' wall seconds (timed_s)
        pa.field("cpu_null_reason", pa.string()),
    )
    started: float | None = None
    spent: float | None = None

    def on_timed(self, starting: bool) -> None:
        if starting:
            self.started = _cpu_seconds()
        elif self.started is not None:
            self.spent = _cpu_seconds() - self.started

    def measure(self) -> dict[str, Any]:
        if self.spent is None:
            return {self.null_reason: f"the {self.context.runtime.name} runtime times its passes in another process"}
        timed_s = self.context.row.get("timed_s")
        return {"timed_cpu_s": self.spent, "cpu_cores_busy": self.spent / timed_s if timed_s else None}


TRACKER = CpuTracker
