"""Comparable baselines: ΔWER and speed-up against the fp32 run on the same chip, host group, simulation state
and eval settings; each chip of a class ranked, fronted and tabled on its own; simulated hardware in rows of
its own; newer eval settings supersede older ones."""
from __future__ import annotations

import dataclasses
import zlib
from datetime import timedelta

import duckdb
import numpy as np
import pytest

from results.queries import connect, fetch
from results.render import render_tables
from results.report import report_data
from results.statcache import fill
from results.store import Store
from results.synthetic import FP32, QUANTIZATIONS, START, trial_row, utterance_rows
from results.tables import cross_hardware, hardware, ladder, pareto, per_device, seed_table, support

INT8 = QUANTIZATIONS[1]
BATCH1 = '{"batch_size":1}'
BATCH4 = '{"batch_size":4}'
# chip a transcribes better and runs faster than chip b: a ranking or front over the whole class would put
# every chip-b run below chip a's
GOOD, BAD = 0.01, 0.12
CHIP_A, CHIP_B = "x86-cpu · chip-a · g1", "x86-cpu · chip-b · g2"


def write(store: Store, trial_id: str, q, hw_class: str, chip: str, group: str, hours: float, eval_config: str = BATCH1,
          setup: str | None = None, simulated: bool = False, rtf: float | None = None,
          error_rate: float | None = None) -> None:
    rng = np.random.default_rng(zlib.crc32(trial_id.encode()))
    q = q if error_rate is None else dataclasses.replace(q, error_rate=error_rate)
    rows = utterance_rows("b", trial_id, f"{trial_id}-run", q, 30, rng)
    row = trial_row("b", trial_id, f"{trial_id}-run", "tiny", hw_class, "clean", q, rows, rng,
                    START + timedelta(hours=hours))
    row.update(hw_chip=chip, host=f"{chip}-host", host_group=group, eval_config=eval_config,
               setup_id=setup or trial_id, hw_simulated=simulated)
    if rtf is not None:
        row["rtf"] = rtf
    store.write_trial("b", trial_id, row, rows)


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    store = Store(str(tmp_path_factory.mktemp("baselines") / "r"))
    # newer, but another machine for int8-b
    write(store, "fp32-a", FP32, "x86-cpu", "chip-a", "g1", 1, rtf=0.2, error_rate=GOOD)
    write(store, "fp32-b", FP32, "x86-cpu", "chip-b", "g2", 0, rtf=0.9, error_rate=BAD)
    write(store, "int8-a", INT8, "x86-cpu", "chip-a", "g1", 2, rtf=0.1, error_rate=GOOD)
    write(store, "int8-b", INT8, "x86-cpu", "chip-b", "g2", 2, rtf=0.3, error_rate=BAD)
    # the same setup as int8-a re-run with other eval settings later: it supersedes int8-a in the tables
    write(store, "int8-a-batch4", INT8, "x86-cpu", "chip-a", "g1", 3, eval_config=BATCH4, setup="int8-a", rtf=0.05,
          error_rate=GOOD)
    # a simulated cuda node (runs on a CPU) beside a real GPU
    write(store, "fp32-sim", FP32, "cuda", "simulated cuda on chip-a", "g1", 0, simulated=True, rtf=0.4)
    write(store, "int8-sim", INT8, "cuda", "simulated cuda on chip-a", "g1", 1, simulated=True, rtf=0.2)
    write(store, "fp32-gpu", FP32, "cuda", "H100", "gpu", 2, rtf=0.01)
    con = connect(store)
    fill(con, store)  # the bootstrap statistics (p, CIs) the tables show
    return con


@pytest.fixture(scope="module")
def board(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    columns, rows = fetch(con, "SELECT * FROM leaderboard")
    board = {r[columns.index("trial_id")]: dict(zip(columns, r)) for r in rows}
    board["_trials"] = {"n": fetch(con, "SELECT count(*) FROM trials")[1][0][0]}
    return board


def test_baseline_is_from_the_same_chip_and_host_group(board: dict[str, dict]) -> None:
    assert board["int8-b"]["baseline_trial_id"] == "fp32-b"
    assert board["int8-b"]["speedup"] == pytest.approx(0.9 / 0.3)


def test_baseline_needs_the_same_eval_settings(board: dict[str, dict]) -> None:
    # fp32-a ran at batch 1; the batch-4 run of int8 has no fp32 run at batch 4 on chip a to compare with
    row = board["int8-a-batch4"]
    assert row["baseline_trial_id"] is None and row["speedup"] is None and row["delta_wer"] is None


def test_changed_eval_settings_supersede_the_old_run_in_the_tables(board: dict[str, dict]) -> None:
    assert "int8-a" not in board and "int8-a-batch4" in board
    assert board["_trials"]["n"] == 8  # the old run stays queryable in `trials`


def test_simulated_hardware_has_rows_of_its_own(board: dict[str, dict]) -> None:
    assert board["int8-sim"]["hw_class"] == "cuda (simulated)" and board["fp32-gpu"]["hw_class"] == "cuda"
    assert board["int8-sim"]["baseline_trial_id"] == "fp32-sim"
    assert board["int8-sim"]["speedup"] == pytest.approx(0.4 / 0.2)
    # ranks are per class as shown: the simulated fp32 run is not ranked against the real GPU
    assert board["fp32-gpu"]["rank"] == 1


def test_each_chip_of_a_class_is_ranked_and_fronted_on_its_own(board: dict[str, dict]) -> None:
    for hardware in (CHIP_A, CHIP_B):
        shown = [r for r in board.values() if r.get("hardware") == hardware]
        assert sorted(r["rank"] for r in shown) == [1, 2], hardware
    # over the whole class chip a's int8 (faster, smaller, fewer errors) would push int8-b off both fronts
    assert board["int8-b"]["on_pareto_rtf"] and board["int8-b"]["on_pareto_size"]
    assert board["int8-b"]["wer"] > board["int8-a-batch4"]["wer"] and board["int8-b"]["rtf"] > board["int8-a-batch4"]["rtf"]


def test_every_table_shows_both_chips_each_against_its_own_baseline(con: duckdb.DuckDBPyConnection,
                                                                    board: dict[str, dict]) -> None:
    int8_b = board["int8-b"]
    assert int8_b["delta_wer"] == pytest.approx(int8_b["wer"] - board["fp32-b"]["wer"])
    assert int8_b["delta_wer_p"] is not None and int8_b["speedup"] == pytest.approx(3.0)
    # per device: one table per chip, int8-b's row with its ΔWER, p and speed-up
    titles = [t.title for t in per_device(con)]
    assert any(CHIP_A in t for t in titles) and any(CHIP_B in t for t in titles), titles
    chip_b = next(t for t in per_device(con) if CHIP_B in t.title)
    cells = dict(zip(chip_b.human_columns, next(r for r in chip_b.human_rows if r[2] == "torch-dynamic-int8")))
    assert cells["speed-up"] == "3.00x" and cells["ΔWER"] not in ("-", "baseline") and cells["p"] != "-", cells
    markdown = render_tables(per_device(con), "markdown")
    assert f"### clean on {CHIP_A}" in markdown and f"### clean on {CHIP_B}" in markdown
    # cross-hardware: a column group per chip; int8's cells hold each chip's own run (none overwrites the other)
    cross = cross_hardware(con)[0]
    int8 = dict(zip(cross.columns, next(r for r in cross.rows if r[2] == "torch-dynamic-int8")))
    assert int8[f"{CHIP_B}.wer"] == pytest.approx(int8_b["wer"]) and int8[f"{CHIP_B}.rtf"] == pytest.approx(0.3)
    assert int8[f"{CHIP_A}.rtf"] == pytest.approx(0.05) and int8[f"{CHIP_B}.delta_wer_p"] is not None
    assert {"x86-cpu · chip-a WER", "x86-cpu · chip-b WER"} <= set(cross.human_columns)
    # the ladder and the fronts per chip, int8-b sped up against fp32-b
    ladder_b = next(t for t in ladder(con) if CHIP_B in t.title)
    assert [dict(zip(ladder_b.columns, r))["trial_id"] for r in ladder_b.rows] == ["int8-b", "fp32-b"]
    assert dict(zip(ladder_b.human_columns, ladder_b.human_rows[0]))["speed-up"] == "3.00x"
    assert any(CHIP_B in t.title for t in pareto(con)) and any(CHIP_A in t.title for t in pareto(con))
    # the seed layout, the support matrix and the machines list name both chips
    sections = [r[0] for r in seed_table(con)[0].human_rows if r[1] == ""]
    assert {"X86-CPU · chip-a", "X86-CPU · chip-b"} <= set(sections), sections
    assert {"x86-cpu · chip-a", "x86-cpu · chip-b"} <= set(support(con)[0].human_columns)
    machines = hardware(con)[0]
    assert {("chip-a", "g1"), ("chip-b", "g2")} <= {(r[1], r[2]) for r in machines.rows}
    # the HTML report's sections and plot points
    data = report_data(con)
    assert {p["hardware"] for p in data["points"]} >= {CHIP_A, CHIP_B}
    report_titles = [t["title"] for t in data["sections"][0]["tables"]]
    assert any(CHIP_B in t for t in report_titles)
