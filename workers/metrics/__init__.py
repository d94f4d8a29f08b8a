"""Metric registry: every module under workers/metrics/ (but `base`) declares one `TRACKER`; its columns join
the trials table here. Adding a metric is adding one module."""
from __future__ import annotations

import importlib
import pkgutil

import pyarrow as pa

from results.schema import register_columns
from workers.evaluate import EvalConfig
from workers.metrics.base import Tracker

TRACKERS: dict[str, type[Tracker]] = {}

for _found in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _found.name != "base":
        _tracker: type[Tracker] = importlib.import_module(f"{__name__}.{_found.name}").TRACKER
        TRACKERS[_tracker.name] = _tracker
        register_columns("trials", [*_tracker.columns, pa.field(f"{_tracker.name}_s", pa.float64())], _tracker.name,
                         leaderboard=True)


def setting(config: EvalConfig, name: str) -> str:
    """The spec's `eval.<name>` for a tracker that has a switch; `on` for one that has none."""
    return str(getattr(config, name, "on"))


def not_measured(config: EvalConfig) -> dict[str, str]:
    """The NULL reasons of the trackers the spec switched off."""
    return {t.null_reason: f"not measured (eval.{name}: off)" for name, t in TRACKERS.items()
            if setting(config, name) == "off"}
