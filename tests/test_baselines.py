"""Comparable baselines: ΔWER and speed-up against the fp32 run on the same chip, host group, simulation state
and eval settings; simulated hardware in rows of its own; newer eval settings supersede older ones."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from results.queries import connect, fetch
from results.store import Store
from results.synthetic import FP32, QUANTIZATIONS, START, trial_row, utterance_rows

INT8 = QUANTIZATIONS[1]
BATCH1 = '{"batch_size":1}'
BATCH4 = '{"batch_size":4}'


def write(store: Store, trial_id: str, q, hw_class: str, chip: str, group: str, hours: float, eval_config: str = BATCH1,
          setup: str | None = None, simulated: bool = False, rtf: float | None = None) -> None:
    rng = np.random.default_rng(abs(hash(trial_id)) % 2**32)
    rows = utterance_rows("b", trial_id, f"{trial_id}-run", q, 30, rng)
    row = trial_row("b", trial_id, f"{trial_id}-run", "tiny", hw_class, "clean", q, rows, rng,
                    START + timedelta(hours=hours))
    row.update(hw_chip=chip, host=f"{chip}-host", host_group=group, eval_config=eval_config,
               setup_id=setup or trial_id, hw_simulated=simulated)
    if rtf is not None:
        row["rtf"] = rtf
    store.write_trial("b", trial_id, row, rows)


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    store = Store(str(tmp_path_factory.mktemp("baselines") / "r"))
    write(store, "fp32-a", FP32, "x86-cpu", "chip-a", "g1", 1, rtf=0.2)  # newer, but another machine for int8-b
    write(store, "fp32-b", FP32, "x86-cpu", "chip-b", "g2", 0, rtf=0.9)
    write(store, "int8-a", INT8, "x86-cpu", "chip-a", "g1", 2, rtf=0.1)
    write(store, "int8-b", INT8, "x86-cpu", "chip-b", "g2", 2, rtf=0.3)
    # the same setup as int8-a re-run with other eval settings later: it supersedes int8-a in the tables
    write(store, "int8-a-batch4", INT8, "x86-cpu", "chip-a", "g1", 3, eval_config=BATCH4, setup="int8-a", rtf=0.05)
    # a simulated cuda node (runs on a CPU) beside a real GPU
    write(store, "fp32-sim", FP32, "cuda", "simulated cuda on chip-a", "g1", 0, simulated=True, rtf=0.4)
    write(store, "int8-sim", INT8, "cuda", "simulated cuda on chip-a", "g1", 1, simulated=True, rtf=0.2)
    write(store, "fp32-gpu", FP32, "cuda", "H100", "gpu", 2, rtf=0.01)
    con = connect(store)
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
