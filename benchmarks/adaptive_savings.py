"""Benchmark: what an adaptive race costs against the full grid, and whether it finds the same Pareto front.

One run, both ways: twelve quantizations of Whisper tiny.en (whisper.cpp q8_0, q5_0 and q4_0, CTranslate2 int8,
HQQ 1/2/3-bit at several group sizes, simulated RTN 2/3-bit) over --utterances utterances of the
synthetic speech set (`make synthetic-speech`), first as a grid (every trial on every utterance), then as a
race (strategy: adaptive) into another results directory, each through the CLI with an embedded Ray.
Compute is the trials' own measured seconds (`compute_s`, summed over rungs for the race); the front is the
Pareto front of each run's own rows on --objectives (the race's: its complete trials). A false stop is a
member of the grid's front that the race stopped. Last line: JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results.race import front  # noqa: E402
from results.store import Store  # noqa: E402

# A bit-width sweep across runtimes: four deployment profiles and eight low-bit torch quantizations. What a race
# saves is the share of clearly dominated trials: near-ties run to the end (README: Adaptive sweeps).
GRID = [
    {"library": "ggml", "format": "q8_0"},
    {"library": "ggml", "format": "q5_0"},
    {"library": "ggml", "format": "q4_0"},
    {"library": "ctranslate2", "format": "int8"},
    {"library": "hqq", "weight_bits": 3, "group_size": 64},
    {"library": "hqq", "weight_bits": 3, "group_size": 128},
    {"library": "hqq", "weight_bits": 2, "group_size": 64},
    {"library": "hqq", "weight_bits": 2, "group_size": 32},
    {"library": "hqq", "weight_bits": 2, "group_size": 128},
    {"library": "hqq", "weight_bits": 1, "group_size": 16},
    # symmetric, as when the README's figures were measured (ptq's RTN rounds onto zero-pointed grids by default)
    {"library": "ptq", "method": "rtn", "weight_bits": 3, "granularity": "per-channel", "symmetric": True},
    {"library": "ptq", "method": "rtn", "weight_bits": 2, "granularity": "per-channel", "symmetric": True},
]


def spec(name: str, utterances: int, strategy: str, objectives: list[str], first_rung: int) -> dict:
    out = {"sweep": name, "models": ["whisper-tiny.en"], "quantization": GRID,
           "datasets": [{"name": "synthetic-speech-espeak", "source": "synthetic", "max_utterances": utterances}],
           # sentences are at most 18 words: 40 tokens bound a looping decoder without cutting a real transcript
           "eval": {"max_new_tokens": 40, "memory": "off"}}
    if strategy == "adaptive":
        out |= {"strategy": "adaptive", "adaptive": {"objectives": objectives, "first_rung": first_rung}}
    return out


def run(spec_path: Path, results: Path) -> float:
    started = time.perf_counter()
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                        "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-m", "sweep.cli", "run", str(spec_path), "--results", str(results)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"quantsweep run {spec_path} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def rows(results: Path, sweep: str) -> list[dict]:
    return Store(str(results)).read("trials", sweep).to_pylist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=300)
    parser.add_argument("--objectives", default="wer,model_size_bytes",
                        help="comma-separated: wer, rtf, model_size_bytes (rtf: the two runs' timings must agree)")
    parser.add_argument("--first-rung", type=int, default=30, help="utterances of the race's first rung")
    parser.add_argument("--work", type=Path, default=None, help="keep the results here (default: a temporary dir)")
    args = parser.parse_args()
    objectives = args.objectives.split(",")
    work = args.work or Path(tempfile.mkdtemp(prefix="adaptive-savings-"))
    work.mkdir(parents=True, exist_ok=True)
    walls = {}
    for strategy in ("grid", "adaptive"):
        path = work / f"{strategy}.yaml"
        path.write_text(yaml.safe_dump(spec(strategy, args.utterances, strategy, objectives, args.first_rung)))
        walls[strategy] = run(path, work / strategy)
    grid, race = rows(work / "grid", "grid"), rows(work / "adaptive", "adaptive")
    failed = [r["quantization"] for r in grid + race if r["status"] not in ("ok", "stopped")]
    if failed:
        raise SystemExit(f"trials that did not finish: {failed}")
    points = {r["quantization"]: {o: r[o] for o in objectives} for r in grid}
    grid_front = front(points, objectives)
    complete = {r["quantization"]: {o: r[o] for o in objectives} for r in race if r["status"] == "ok"}
    race_front = front(complete, objectives)
    stopped = {r["quantization"]: r for r in race if r["status"] == "stopped"}
    grid_s = sum(r["compute_s"] for r in grid)
    race_s = sum(r["compute_s"] for r in race)
    estimate_s = sum(r["grid_estimate_s"] or 0 for r in race)
    print(f"{'quantization':22} {'grid WER':>9} {'race':>10} {'rung':>5} {'utts':>5} {'grid s':>8} {'race s':>8}")
    by_label = {r["quantization"]: r for r in race}
    for r in sorted(grid, key=lambda r: r["wer"]):
        q = by_label[r["quantization"]]
        print(f"{r['quantization']:22} {r['wer'] * 100:8.2f}% {q['status']:>10} {q['race_rung']:>5} "
              f"{q['n_utterances']:>5} {r['compute_s']:8.1f} {q['compute_s']:8.1f}"
              + ("  front" if r["quantization"] in grid_front else ""))
    print(f"grid front: {sorted(grid_front)}\nrace front: {sorted(race_front)}")
    print(f"compute: race {race_s:.0f} s / grid {grid_s:.0f} s measured = {race_s / grid_s:.1%} "
          f"(the race's own grid estimate: {estimate_s:.0f} s); wall: grid {walls['grid']:.0f} s, "
          f"race {walls['adaptive']:.0f} s; timings on a shared machine")
    print(json.dumps({
        "utterances": args.utterances, "first_rung": args.first_rung, "quantizations": len(GRID),
        "objectives": objectives,
        "grid_compute_s": round(grid_s, 1), "race_compute_s": round(race_s, 1),
        "race_compute_share": round(race_s / grid_s, 4), "race_grid_estimate_s": round(estimate_s, 1),
        "grid_wall_s": round(walls["grid"], 1), "race_wall_s": round(walls["adaptive"], 1),
        "stopped": len(stopped), "same_front": grid_front == race_front,
        "false_stops": sorted(grid_front & set(stopped)), "grid_front": sorted(grid_front),
    }))


if __name__ == "__main__":
    main()
