"""Benchmark: how much of a sweep's wall time is trial compute, and how often each model was read from disk.

Runs sweeps/demo.yaml (or --spec) on the embedded Ray into a fresh results directory, as `quantsweep run`
does. efficiency = sum of the trials' compute seconds / wall seconds from Ray start to the last write.
Last line: JSON {"efficiency", "model_loads", ...}.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

from results.store import Store
from sweep import scheduler
from sweep.plan import expand
from sweep.spec import load_spec
from workers.hardware import probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", default="sweeps/demo.yaml")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    hardware = probe()
    with tempfile.TemporaryDirectory() as results:
        started = time.perf_counter()
        scheduler.connect(None, hardware)
        plan = expand(spec, hardware.hw_class)
        summary = scheduler.run_trials(plan.trials, Store(results), lambda trial, row: None)
        wall_s = time.perf_counter() - started
    models = len(spec.models)
    figures = {
        "efficiency": round(summary.compute_s / wall_s, 3),
        "model_loads": summary.model_loads,
        "models": models,
        "trials": len(plan.trials),
        "compute_s": round(summary.compute_s, 1),
        "wall_s": round(wall_s, 1),
    }
    print(f"{len(plan.trials)} trials, {models} model(s): compute {summary.compute_s:.1f} s of {wall_s:.1f} s wall; "
          f"model loads {summary.model_loads} (one per model per worker is the floor)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
