"""Benchmark: how much of a sweep's wall time is the floor of its trials, and what each trial spends beside it.

Runs sweeps/demo.yaml (or --spec) on the embedded Ray into a fresh results directory, as `quantsweep run` does.
The floor of a trial is its model's load (once per worker), its quantization (calibration included), its warm-up
and its timed passes (the row's `floor_s`). efficiency = sum of the trials' floor seconds / wall seconds from Ray
start to the last write; each trial's floor share = floor_s / compute_s (its own wall). Prints the phase table
(seconds per trial) and, last, one JSON line {"efficiency", "min_trial_floor_share", "wall_s", ...}.
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
from workers.metrics import TRACKERS

PHASES = ("load_s", "quantize_s", "warmup_s", "timed_s", *(f"{name}_s" for name in TRACKERS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", default="sweeps/demo.yaml")
    parser.add_argument("--eval", action="append", default=[], metavar="KEY=VALUE",
                        help="override an eval setting, e.g. --eval memory=isolated --eval drift=on")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    overrides = dict(item.split("=", 1) for item in args.eval)
    spec = spec.model_copy(update={"eval": spec.eval.model_validate(spec.eval.model_dump() | overrides)})
    hardware = probe()
    with tempfile.TemporaryDirectory() as results:
        started = time.perf_counter()
        scheduler.connect(None, hardware)
        plan = expand(spec, hardware.hw_class)
        summary = scheduler.run_trials(plan.trials, Store(results), lambda trial, row: None)
        wall_s = time.perf_counter() - started
        rows = [r for r in Store(results).read("trials", spec.sweep).to_pylist() if r["status"] == "ok"]
    print("| trial | " + " | ".join(PHASES) + " | other_s | compute_s | floor share |")
    print("|---" * (len(PHASES) + 4) + "|")
    for r in sorted(rows, key=lambda r: r["started_at"]):
        load = 0.0 if r["model_reused"] else r["load_s"]
        quantize = 0.0 if r["quantized_reused"] else r["quantize_s"]
        phases = {"load_s": load, "quantize_s": quantize} | {p: r[p] or 0.0 for p in PHASES[2:]}
        other = r["compute_s"] - sum(phases.values())
        print(f"| {r['quantization']} | " + " | ".join(f"{phases[p]:.1f}" for p in PHASES)
              + f" | {other:.1f} | {r['compute_s']:.1f} | {r['floor_s'] / r['compute_s']:.2f} |")
    floor_s = sum(r["floor_s"] for r in rows)
    figures = {
        "efficiency": round(floor_s / wall_s, 3),
        "min_trial_floor_share": round(min(r["floor_s"] / r["compute_s"] for r in rows), 3),
        "floor_s": round(floor_s, 1),
        "compute_s": round(summary.compute_s, 1),
        "wall_s": round(wall_s, 1),
        "trials_ok": len(rows),
        "trials": len(plan.trials),
        "model_loads": summary.model_loads,
    }
    print(f"{len(plan.trials)} trials: floor {floor_s:.1f} s of {wall_s:.1f} s wall (trial compute {summary.compute_s:.1f} s); "
          f"model loads {summary.model_loads} (one per model per worker is the floor)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
