"""Benchmark: the driver's cost per trial, and planning + resume diff of a 10,000-trial sweep.

Starts a local 4-node cluster (`quantsweep cluster local`), runs N no-op trials on it (the test plugin's
`noop` family and `probe` quantizer: no model, no audio work), then deletes a tenth of the results and
times `expand` + `Store.finished` + `diff` as `quantsweep run` does before it resumes.
  overhead_ms_per_trial: driver CPU milliseconds per trial (its own process: planning excluded, Ray's
                         client threads, result handling and Parquet writes included)
  wall_ms_per_trial:     sweep wall milliseconds per trial across the 4 runners
  resume_diff_s:         seconds to plan N trials and diff them against the 90%-finished results directory
Last line: JSON with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ["QUANTSWEEP_PLUGINS"] = "tests.plugins.trials"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(ROOT))

from results.store import Store  # noqa: E402
from sweep import scheduler  # noqa: E402
from sweep.cluster import start_local, stop_local  # noqa: E402
from sweep.plan import diff, expand  # noqa: E402
from sweep.spec import parse_spec  # noqa: E402


def spec(trials: int, results: str) -> dict:
    models = max(1, trials // 100)
    return {
        "sweep": "overhead", "results": results,
        "models": [{"name": f"noop{i}", "family": "noop", "local": str(ROOT)} for i in range(models)],
        "quantization": [{"library": "probe", "name": f"p{i}"} for i in range(trials // models)],
        "datasets": [{"name": "one", "source": "samples", "max_utterances": 1}],
        "hardware": ["x86-cpu"],
        "eval": {"warmup_utterances": 0},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as results:
        the_spec = parse_spec(spec(args.trials, results))
        cluster = start_local(["x86-cpu"] * args.nodes)
        try:
            scheduler.connect(cluster.address)
            plan = expand(the_spec, "x86-cpu", ["x86-cpu"])
            cpu0, wall0 = time.process_time(), time.perf_counter()
            summary = scheduler.run_trials(plan.trials, Store(results), lambda trial, row: None)
            driver_cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
        finally:
            stop_local()
        trial_dir = Path(results) / "table=trials" / "sweep=overhead"
        for trial in plan.trials[: len(plan.trials) // 10]:
            for path in trial_dir.glob(f"{trial.trial_id}.*.parquet"):
                path.unlink()
        started = time.perf_counter()
        replanned = expand(the_spec, "x86-cpu", ["x86-cpu"])
        todo = diff(replanned.trials, Store(results).finished("overhead"))
        resume_diff_s = time.perf_counter() - started
    n = len(plan.trials)
    figures = {
        "overhead_ms_per_trial": round(1000 * driver_cpu_s / n, 3),
        "wall_ms_per_trial": round(1000 * wall_s / n, 3),
        "resume_diff_s": round(resume_diff_s, 3),
        "trials": n,
        "ok": summary.statuses.get("ok", 0),
        "to_run_after_diff": len(todo.to_run),
    }
    print(f"{n} no-op trials on {args.nodes} local nodes: {wall_s:.1f} s wall, driver CPU {driver_cpu_s:.1f} s; "
          f"statuses {dict(summary.statuses)}; resume diff {resume_diff_s:.2f} s leaves {len(todo.to_run)} to run")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
