"""DuckDB views checked against values computed in Python from the same Parquet files (synthetic sweeps
written through the real Store), and the reading of files of an older schema version."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from results.queries import connect, fetch
from results.schema import SCHEMA_VERSION, TABLES
from results.statcache import fill
from results.stats import paired_delta, resample_counts, wer_interval
from results.store import Store
from results.synthetic import (FP32, QUANTIZATIONS, START, Quantization, failure_row, trial_row, utterance_rows,
                               write_grid)
from results.tables import cross_hardware, seed_table, support

NF4 = Quantization("bnb-nf4", "bnb", "nf4", 4, 0.1, 1.0, 0.3)
UTTERANCES = 60


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("views") / "results"
    store = Store(str(root))
    write_grid(store, "s1", ["tiny"], ["x86-cpu", "cuda"], ["clean", "other"], utterances=UTTERANCES)
    # a re-run of one trial: only its newer run may be seen
    write_grid(store, "s1", ["tiny"], ["cuda"], ["clean"], quantizations=QUANTIZATIONS[2:3], utterances=UTTERANCES,
               seed=1, run=1)
    # timing that shared the machine: flagged
    rng = np.random.default_rng(11)
    rows = utterance_rows("s1", "shared", "shared-run", QUANTIZATIONS[1], UTTERANCES, rng)
    q = Quantization("torch-int8-shared", "torch", "dynamic-int8-shared", 8, 0.05, 0.6, 0.43, True)
    store.write_trial("s1", "shared", trial_row("s1", "shared", "shared-run", "tiny", "x86-cpu", "clean", q, rows,
                                                rng, START + timedelta(hours=5), exclusive=False), rows)
    failures = [("x86-cpu", "unsupported", "bitsandbytes nf4 needs a CUDA device\nmore", None),
                ("cuda", "failed", "CUDA out of memory", "OutOfMemoryError"),
                ("arm-cpu", "no_capacity", "no live node", None)]
    for hw_class, status, error, error_type in failures:
        trial_id = f"nf4-{hw_class}"
        store.write_trial("s1", trial_id, failure_row("s1", trial_id, "tiny", hw_class, "clean", NF4, status, error,
                                                      error_type, START), [])
    return store


def latest_trials(store: Store) -> dict[str, dict]:
    rows = sorted(store.read("trials").to_pylist(), key=lambda r: r["finished_at"])
    return {r["trial_id"]: r for r in rows}


def board(store: Store) -> dict[str, dict]:
    con = connect(store)
    fill(con, store)
    columns, rows = fetch(con, "SELECT * FROM leaderboard")
    return {r[columns.index("trial_id")]: dict(zip(columns, r)) for r in rows}


def test_trials_view_keeps_the_latest_run_and_utterances_follow_it(store: Store) -> None:
    con = connect(store)
    rerun = "s1-tiny-cuda-clean-hqq-w4-g64"
    (run_id,), = fetch(con, "SELECT run_id FROM trials WHERE trial_id = ?", [rerun])[1]
    assert run_id == f"{rerun}-run1"
    assert fetch(con, "SELECT DISTINCT run_id FROM utterances WHERE trial_id = ?", [rerun])[1] == [(run_id,)]
    expected = latest_trials(store)
    assert fetch(con, "SELECT count(*) FROM trials")[1] == [(len(expected),)]


def test_leaderboard_matches_python_over_the_parquet(store: Store) -> None:
    trials = latest_trials(store)
    got = board(store)
    ok = {k: t for k, t in trials.items() if t["status"] == "ok"}
    assert set(got) == set(ok)
    for trial_id, t in ok.items():
        base = next(b for b in ok.values() if b["library"] == "none" and b["scheme"] == "fp32"
                    and (b["model"], b["hw_class"], b["dataset"]) == (t["model"], t["hw_class"], t["dataset"]))
        row = got[trial_id]
        assert row["wer"] == pytest.approx(t["word_errors"] / t["ref_words"])
        assert row["delta_wer"] == pytest.approx(t["wer"] - base["wer"])
        assert row["speedup"] == pytest.approx(base["rtf"] / t["rtf"])
        assert row["size_reduction"] == pytest.approx(1 - t["model_size_bytes"] / base["model_size_bytes"])
        assert row["meets_99pct"] == ((1 - t["wer"]) >= 0.99 * (1 - base["wer"]))
        assert row["timing_noisy"] == (not t["timing_exclusive"] or t["rtf_cv"] > 0.05)
        assert row["baseline_trial_id"] == base["trial_id"]
    assert got["shared"]["timing_noisy"] is True
    for group in {(r["dataset"], r["hw_class"]) for r in got.values()}:
        ranked = sorted((r for r in got.values() if (r["dataset"], r["hw_class"]) == group), key=lambda r: r["rank"])
        assert [r["wer"] for r in ranked] == sorted(r["wer"] for r in ranked)


def pareto_front(points: list[tuple[str, float, float]]) -> set[str]:
    """Brute force: not dominated by any point at least as good on both axes and better on one."""
    return {k for k, x, y in points
            if not any(x2 <= x and y2 <= y and (x2 < x or y2 < y) for _, x2, y2 in points)}


def test_pareto_flags_match_brute_force(store: Store) -> None:
    got = board(store)
    for group in {(r["dataset"], r["hw_class"]) for r in got.values()}:
        rows = [r for r in got.values() if (r["dataset"], r["hw_class"]) == group]
        for axis, flag in (("model_size_bytes", "on_pareto_size"), ("rtf", "on_pareto_rtf")):
            expected = pareto_front([(r["trial_id"], r[axis], r["wer"]) for r in rows])
            assert {r["trial_id"] for r in rows if r[flag]} == expected, (group, axis)
        assert all(r["on_pareto"] == (r["on_pareto_size"] or r["on_pareto_rtf"]) for r in rows)
    con = connect(store)
    fronts = fetch(con, "SELECT count(*) FROM pareto")[1][0][0]
    assert fronts == sum(r["on_pareto_size"] + r["on_pareto_rtf"] for r in got.values())


def test_pareto_ties_keep_both_equal_points() -> None:
    assert pareto_front([("a", 1, 1), ("b", 1, 1), ("c", 2, 1)]) == {"a", "b"}


def test_bootstrap_columns_match_the_statistics_over_the_stored_utterances(store: Store) -> None:
    got = board(store)
    utterances = store.read("utterances").to_pylist()
    by_run: dict[str, dict[str, dict]] = {}
    for u in utterances:
        by_run.setdefault(u["run_id"], {})[u["utt_id"]] = u
    counts = resample_counts(UTTERANCES)
    for row in got.values():
        run, base = by_run[row["run_id"]], by_run[row["baseline_run_id"]]
        ids = sorted(run)
        errors = np.array([[run[i]["substitutions"] + run[i]["deletions"] + run[i]["insertions"] for i in ids]], float)
        words = np.array([[run[i]["ref_words"] for i in ids]], float)
        base_errors = np.array([[base[i]["substitutions"] + base[i]["deletions"] + base[i]["insertions"]
                                 for i in ids]], float)
        low, high = wer_interval(errors, words, counts)
        assert (row["wer_ci_low"], row["wer_ci_high"]) == pytest.approx((low[0], high[0]))
        paired = paired_delta(errors, words, base_errors, words, counts)
        assert row["delta_wer_p"] == pytest.approx(paired.p[0])
        assert (row["delta_wer_ci_low"], row["delta_wer_ci_high"]) == pytest.approx((paired.low[0], paired.high[0]))
        assert row["significant"] == (paired.p[0] < 0.05)
        assert row["identical_rate"] == pytest.approx(np.mean([run[i]["hypothesis"] == base[i]["hypothesis"]
                                                               for i in ids]))
        assert row["qoi"] == pytest.approx(np.mean(errors[0] / words[0] <= base_errors[0] / words[0]))
        assert row["wer_ci_low"] <= row["wer"] <= row["wer_ci_high"]
    # the hqq-w3 runs lose about 10 points on 60 utterances: significant; fp32 against itself: p = 1
    assert all(r["significant"] for r in got.values() if r["quantization"] == "hqq-w3-g64")
    assert all(r["delta_wer_p"] == 1 and r["identical_rate"] == 1 for r in got.values() if r["is_baseline"])


def test_statistics_are_cached_and_reused(store: Store) -> None:
    board(store)
    con = connect(store)
    assert fill(con, store) == 0
    assert fetch(con, "SELECT count(*) FROM leaderboard WHERE wer_ci_low IS NULL")[1] == [(0,)]
    other_seed = connect(store, seed=5)
    assert fetch(other_seed, "SELECT count(*) FROM leaderboard WHERE wer_ci_low IS NULL")[1][0][0] > 0


def test_support_matrix_states(store: Store) -> None:
    con = connect(store)
    columns, rows = fetch(con, "SELECT library, scheme, hw_class, state, reason, error_classes FROM support_matrix "
                               "WHERE library = 'bnb' ORDER BY hw_class")
    assert rows == [("bnb", "nf4", "arm-cpu", "no_capacity", None, None),
                    ("bnb", "nf4", "cuda", "failed", None, "OutOfMemoryError"),
                    ("bnb", "nf4", "x86-cpu", "unsupported", "bitsandbytes nf4 needs a CUDA device", None)]
    table = support(con)[0]
    cells = dict(zip(table.human_columns, next(r for r in table.human_rows if r[0] == "bnb")))
    assert cells["cuda"] == "failed (OutOfMemoryError)"
    assert cells["x86-cpu"] == "unsupported (bitsandbytes nf4 needs a CUDA device)"
    hqq = "SELECT state FROM support_matrix WHERE library = 'hqq' AND scheme = 'w4' AND hw_class = 'cuda'"
    assert fetch(con, hqq)[1] == [("ok",)]


def test_hardware_lists_each_machine_once(store: Store) -> None:
    con = connect(store)
    columns, rows = fetch(con, "SELECT hw_class, host, trials, ok FROM hardware ORDER BY hw_class")
    # cuda: 10 grid trials (the re-run counts once) + the failed nf4; x86: 10 + shared + unsupported nf4
    assert rows == [("cuda", "cuda-host", 11, 10), ("x86-cpu", "x86-cpu-host", 12, 11)]


def test_cross_hardware_and_seed_table_layouts(store: Store) -> None:
    got = board(store)
    con = connect(store)
    clean = next(t for t in cross_hardware(con) if t.title.startswith("clean"))
    row = dict(zip(clean.columns, next(r for r in clean.rows if r[2] == "hqq-w3-g64")))
    expected = next(r for r in got.values() if (r["dataset"], r["hw_class"], r["quantization"])
                    == ("clean", "cuda", "hqq-w3-g64"))
    cuda = "cuda · cuda-chip · cuda-host"  # the leaderboard's `hardware`: class, chip, host group
    assert row[f"{cuda}.wer"] == pytest.approx(expected["wer"]) and row[f"{cuda}.rtf"] == pytest.approx(expected["rtf"])
    assert not any(c.startswith("arm-cpu") for c in row)  # no ok run there
    assert clean.rows[0][2] == "fp32"  # the baseline leads
    table = seed_table(con)[0]
    assert table.columns == ["hw_class", "hw_chip", "host_group", "model", "method", "wer.clean", "wer.other",
                             "cer.clean", "cer.other", "rtf", "size_reduction"]
    base = dict(zip(table.columns, next(r for r in table.rows if r[0] == "cuda" and r[4] == "Baseline (fp32)")))
    runs = [r for r in got.values() if r["hw_class"] == "cuda" and r["is_baseline"]]
    assert base["rtf"] == pytest.approx(sum(r["rtf"] * r["audio_seconds"] for r in runs)
                                        / sum(r["audio_seconds"] for r in runs))
    assert table.human_rows[0][0] == "CUDA"  # a device section starts each block


def test_older_schema_version_files_are_read(tmp_path: Path) -> None:
    """A v1 file (no latency_cv) beside current ones: views, Store.read and finished all take it."""
    store = Store(str(tmp_path / "results"))
    write_grid(store, "s", ["m"], ["x86-cpu"], ["d"], quantizations=(FP32,), utterances=10)
    rng = np.random.default_rng(0)
    rows = utterance_rows("s", "old", "old-run", QUANTIZATIONS[1], 10, rng)
    row = trial_row("s", "old", "old-run", "m", "x86-cpu", "d", QUANTIZATIONS[1], rows, rng, START)
    store.write_trial("s", "old", row, [{**u, "schema_version": 1} for u in rows])
    # what a v1 writer left: the trials file without the column v2 added
    v1 = pa.schema([f for f in TABLES["trials"] if f.name != "latency_cv"])
    assert len(v1) == len(TABLES["trials"]) - 1
    pq.write_table(pa.Table.from_pylist([{**row, "schema_version": 1}], schema=v1),
                   tmp_path / "results/table=trials/sweep=s/old.ok.parquet")  # replaces the v2 file
    con = connect(store)
    assert fetch(con, "SELECT schema_version, latency_cv FROM trials WHERE trial_id = 'old'")[1] == [(1, None)]
    assert fetch(con, "SELECT max(schema_version) FROM trials")[1] == [(SCHEMA_VERSION,)]
    fill(con, store)
    (wer, low), = fetch(con, "SELECT wer, wer_ci_low FROM leaderboard WHERE trial_id = 'old'")[1]
    assert wer == pytest.approx(row["wer"]) and low is not None
    assert store.finished("s")["old"] == "ok"
    assert store.read("trials", "s").num_rows == 2
    store.compact()  # the part file holds the v1 row as it was, in the current schema
    part = pq.read_table(next((tmp_path / "results/table=trials/sweep=s").glob("part-*.parquet")))
    assert part.schema == TABLES["trials"]
    assert sorted(zip(part["trial_id"].to_pylist(), part["schema_version"].to_pylist())) == [
        ("old", 1), ("s-m-x86-cpu-d-fp32", SCHEMA_VERSION)]
    assert fetch(connect(store), "SELECT schema_version, wer FROM trials WHERE trial_id = 'old'")[1] == [
        (1, pytest.approx(row["wer"]))]
