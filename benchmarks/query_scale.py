"""Benchmark: results queries at scale: 10,000 synthetic trials and 1,000,000 utterance rows.

Targets (issue 4): leaderboard, Pareto and cross-hardware queries each under 1 s, bootstrap CIs of every
trial under 10 s, compaction under 30 s. Prints each measured figure; the last line is one JSON object
with the figures in seconds.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

from results.queries import connect, fetch
from results.statcache import fill
from results.store import Store
from results.synthetic import FP32, Quantization, write_grid
from results.tables import cross_hardware
import workers.metrics  # noqa: F401  (the metrics' columns, which synthetic rows carry)

MODELS = ["tiny", "base", "small", "medium", "large"]
HW_CLASSES = ["x86-cpu", "arm-cpu", "cuda", "apple"]
DATASETS = ["clean", "other", "ami", "tedlium", "voxpopuli"]
T = TypeVar("T")


def quantizations(n: int) -> tuple[Quantization, ...]:
    """fp32 and n-1 made-up variants spread over bits, error rates, speeds and sizes."""
    variants = [FP32]
    for i in range(n - 1):
        bits = (8, 4, 3, 2)[i % 4]
        variants.append(Quantization(f"lib{i % 5}-w{bits}-v{i}", f"lib{i % 5}", f"w{bits}", bits,
                                     0.05 + 0.004 * (8 - bits) + 0.0005 * (i % 7), 0.5 + 0.01 * (i % 60),
                                     bits / 32 + 0.02 + 0.001 * (i % 11)))
    return tuple(variants)


def generate(root: str, model: str, per_grid: int, utterances: int) -> int:
    return len(write_grid(Store(root), "scale", [model], HW_CLASSES, DATASETS, quantizations(per_grid),
                          utterances=utterances, seed=MODELS.index(model)))


def timed(label: str, figures: dict[str, float], action: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = action()
    figures[label] = round(time.perf_counter() - started, 3)
    print(f"{label}: {figures[label]:.3f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--utterances", type=int, default=100, help="per trial")
    parser.add_argument("--dir", default=None, help="results directory (default: a temporary one)")
    args = parser.parse_args()
    per_grid = args.trials // (len(MODELS) * len(HW_CLASSES) * len(DATASETS))
    with tempfile.TemporaryDirectory() as temporary:
        root = args.dir or str(Path(temporary) / "results")
        store = Store(root)
        figures: dict[str, float] = {}
        with ProcessPoolExecutor(2) as pool:
            trials = timed("generate_s", figures, lambda: sum(
                pool.map(generate, [root] * len(MODELS), MODELS, [per_grid] * len(MODELS),
                         [args.utterances] * len(MODELS))))
        files = sum(1 for _ in Path(root).rglob("*.parquet"))
        print(f"{trials} trials, {trials * args.utterances} utterance rows, {files} Parquet files")

        compaction = timed("compact_s", figures, store.compact)
        print(f"  merged {compaction.merged_files} files ({compaction.rows} rows) into {compaction.part_files} parts")
        con = timed("connect_s", figures, lambda: connect(store))
        computed = timed("bootstrap_all_s", figures, lambda: fill(con, store))
        print(f"  bootstrap CIs and paired tests of {computed} runs, 1000 resamples each")
        con = timed("connect_cached_s", figures, lambda: connect(store))
        columns, board = timed("leaderboard_s", figures, lambda: fetch(con, "SELECT * FROM leaderboard ORDER BY "
                                                                            "dataset, hw_class, rank"))
        with_ci = sum(r[columns.index("wer_ci_low")] is not None for r in board)
        _, front = timed("pareto_s", figures, lambda: fetch(con, "SELECT * FROM pareto"))
        tables = timed("cross_hardware_s", figures, lambda: cross_hardware(con))
        print(f"  leaderboard {len(board)} rows, {with_ci} with CIs; "
              f"Pareto {len(front)} front points; cross-hardware {sum(len(t.rows) for t in tables)} rows")
        again = timed("compact_again_s", figures, store.compact)
        print(f"  second compaction merged {again.merged_files} files")
        targets = {"leaderboard_s": 1, "pareto_s": 1, "cross_hardware_s": 1, "bootstrap_all_s": 10, "compact_s": 30}
        for name, limit in targets.items():
            print(f"  {name} {figures[name]:.3f} s {'within' if figures[name] < limit else 'OVER'} {limit} s")
        print(json.dumps({"trials": trials, "utterance_rows": trials * args.utterances, **figures}))


if __name__ == "__main__":
    main()
