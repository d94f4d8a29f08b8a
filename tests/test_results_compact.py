"""Compaction: idempotent, atomic, and safe while another process writes trials (real processes, real files)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from results.queries import connect, fetch
from results.store import PART_PREFIX, Store, _identity, _remove_if_unchanged
from results.synthetic import FP32, write_grid

ROOT = Path(__file__).resolve().parents[1]
# Another process re-runs every trial of a sweep round after round (each round a newer run of each trial).
WRITER = """
import sys
import workers.metrics  # the metrics' columns, which synthetic rows carry
from results.store import Store
from results.synthetic import write_grid
store = Store(sys.argv[1])
for run in range(int(sys.argv[2])):
    write_grid(store, "live", ["m"], ["x86-cpu", "cuda"], ["d1", "d2"], utterances=20, seed=run, run=run)
"""
ROUNDS = 12
TRIALS = 2 * 2 * 5


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def snapshot(store: Store) -> dict[str, list]:
    con = connect(store)
    return {
        "trials": fetch(con, "SELECT trial_id, run_id, wer FROM trials ORDER BY ALL")[1],
        "utterances": fetch(con, "SELECT run_id, utt_id, hypothesis FROM utterances ORDER BY ALL")[1],
        "finished": sorted(store.finished("s").items()),
    }


def test_compaction_merges_keeps_every_row_and_is_idempotent(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "results"))
    write_grid(store, "s", ["m"], ["x86-cpu"], ["d1", "d2"], utterances=15)
    before = snapshot(store)
    done = store.compact()
    assert done.merged_files == 2 * 10 and done.part_files == 2 and not done.kept_changed
    assert snapshot(store) == before
    write_grid(store, "s", ["m"], ["x86-cpu"], ["d1"], utterances=15, seed=1, run=1)  # re-runs of 5 trials
    before = snapshot(store)
    done = store.compact()  # the parts and the 5 new files of each table, into one part per table
    assert done.merged_files == 2 * (5 + 1) and done.part_files == 2
    files = parquet_files(tmp_path / "results")
    assert [f.name.startswith(PART_PREFIX) for f in files] == [True, True]
    assert snapshot(store) == before
    # history is kept: both runs of the re-run trials are in the part file, the views pick the latest
    assert pq.read_table(next((tmp_path / "results/table=trials").rglob("*.parquet"))).num_rows == 15
    again = store.compact()
    assert (again.merged_files, again.part_files) == (0, 0)
    assert parquet_files(tmp_path / "results") == files
    # new per-trial files are merged with the existing part, into one part again
    write_grid(store, "s", ["m"], ["x86-cpu"], ["d2"], quantizations=(FP32,), utterances=15, seed=2, run=2)
    store.compact()
    assert len(list((tmp_path / "results/table=trials/sweep=s").glob("*.parquet"))) == 1
    assert len(snapshot(store)["trials"]) == 10


def test_a_file_replaced_after_it_was_read_is_not_deleted(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "results"))
    write_grid(store, "s", ["m"], ["x86-cpu"], ["d"], quantizations=(FP32,), utterances=5)
    path = next((tmp_path / "results/table=trials/sweep=s").glob("*.parquet"))
    merged = _identity(path)
    write_grid(store, "s", ["m"], ["x86-cpu"], ["d"], quantizations=(FP32,), utterances=5, seed=1, run=1)
    assert not _remove_if_unchanged(path, merged)
    assert pq.read_table(path).column("run_id").to_pylist() == [path.name.split(".")[0] + "-run1"]
    assert _remove_if_unchanged(path, _identity(path)) and not path.exists()


def test_compaction_while_another_process_writes(tmp_path: Path) -> None:
    root = tmp_path / "results"
    store = Store(str(root))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(ROUNDS)], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True)
    merged, compactions, reads = 0, 0, 0
    while writer.poll() is None:
        if root.exists():
            done = store.compact()
            merged += done.merged_files
            compactions += 1
            store.finished("live")  # a resume reading at the same time must not fail
            reads += 1
        time.sleep(0.01)
    assert writer.returncode == 0, writer.stderr.read()
    assert compactions >= 3 and merged > 0, (compactions, merged)
    last = ROUNDS - 1

    def check() -> None:
        con = connect(store)
        rows = fetch(con, "SELECT trial_id, run_id, count(*) OVER (PARTITION BY trial_id) FROM trials")[1]
        assert len(rows) == TRIALS
        assert all(run_id == f"{trial_id}-run{last}" and n == 1 for trial_id, run_id, n in rows)
        counts = fetch(con, "SELECT run_id, count(*), count(DISTINCT utt_id) FROM utterances GROUP BY run_id")[1]
        assert sorted(counts) == sorted((f"{t}-run{last}", 20, 20) for t, _, _ in rows)
        assert store.finished("live") == {t: "ok" for t, _, _ in rows}

    check()
    store.compact()  # and once more with nobody writing: only part files left, same answers
    assert all(p.name.startswith(PART_PREFIX) for p in parquet_files(root))
    check()
