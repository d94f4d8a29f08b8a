"""The result commands in-process (typer's runner over the real app): formats, column names, marks, units."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from results.queries import connect as connect_results
from results.store import Store
from results.synthetic import QUANTIZATIONS, START, trial_row, write_grid
from sweep.cli import app

# The statistics' names users script against (issue 4): in the JSON/CSV output and the leaderboard view.
STAT_COLUMNS = ("wer_ci_low", "wer_ci_high", "delta_wer", "delta_wer_p", "qoi", "meets_99pct", "identical_rate",
                "rtf_cv", "size_reduction", "speedup", "on_pareto")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "results"
    store = Store(str(root))
    write_grid(store, "s", ["tiny"], ["x86-cpu", "cuda"], ["clean"], utterances=80)
    # the baseline's own transcripts under another label, with a noisy timing
    baseline = store.read("utterances", "s").filter(pc.equal(pc.field("trial_id"), "s-tiny-x86-cpu-clean-fp32"))
    rows = [{**u, "trial_id": "noisy", "run_id": "noisy-run"} for u in baseline.to_pylist()]
    rng = np.random.default_rng(3)
    row = trial_row("s", "noisy", "noisy-run", "tiny", "x86-cpu", "clean", QUANTIZATIONS[1], rows, rng,
                    START + timedelta(hours=1))
    store.write_trial("s", "noisy", {**row, "quantization": "int8-noisy", "rtf_cv": 0.2}, rows)
    return root


def run(*args: str) -> str:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, (done.output, done.exception)
    return done.stdout


def test_json_has_the_statistics_columns_with_raw_values(results: Path) -> None:
    board = json.loads(run("leaderboard", "--results", str(results), "--format", "json"))
    assert len(board) == 11
    for name in STAT_COLUMNS:
        assert name in board[0], name
    noisy = next(b for b in board if b["trial_id"] == "noisy")
    assert noisy["rtf_cv"] == 0.2 and noisy["timing_noisy"] is True
    # fp32 outputs under another label: same transcripts as the baseline, so ΔWER 0, p = 1, identical 100%
    assert (noisy["delta_wer"], noisy["delta_wer_p"], noisy["identical_rate"]) == (0.0, 1.0, 1.0)
    assert all(0 <= b["wer_ci_low"] <= b["wer"] <= b["wer_ci_high"] for b in board)


def test_markdown_shows_units_and_marks(results: Path) -> None:
    text = run("leaderboard", "--results", str(results), "--format", "markdown")
    line = next(r for r in text.splitlines() if "| int8-noisy |" in r)
    assert "+0.00% ~" in line  # not significant
    assert "±20.0% !" in line  # noisy timing
    assert " MB |" in line and "x |" in line and " ms |" in line
    assert "~ ΔWER not significant at 5%" in text


def test_cross_hardware_csv_and_seed_preset(results: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(run("leaderboard", "--results", str(results), "--format", "csv",
                                               "--view", "cross-hardware"))))
    cuda, x86 = "cuda · cuda-chip · cuda-host", "x86-cpu · x86-cpu-chip · x86-cpu-host"
    assert {f"{cuda}.wer", f"{cuda}.rtf", f"{x86}.wer", f"{x86}.model_size_bytes"} <= set(rows[0])
    assert [r["quantization"] for r in rows][0] == "fp32"
    seed = run("leaderboard", "--results", str(results), "--format", "markdown", "--preset", "seed-table")
    assert "| Device/Method | WER clean | CER clean | RTF | Size Red. |" in seed
    assert "| Baseline (fp32) |" in seed


def test_other_views_and_refusals(results: Path) -> None:
    ladder = run("leaderboard", "--results", str(results), "--view", "ladder", "--format", "json")
    steps = [(r["hw_class"], r["step"], r["rtf"]) for r in json.loads(ladder) if r["model"] == "tiny"]
    for hw in ("cuda", "x86-cpu"):
        rtfs = [rtf for h, _, rtf in sorted(s for s in steps if s[0] == hw)]
        assert rtfs == sorted(rtfs)
    assert "support matrix" in run("leaderboard", "--results", str(results), "--view", "support")
    bad = CliRunner().invoke(app, ["leaderboard", "--results", str(results), "--view", "nope"])
    assert bad.exit_code == 2


def test_compact_command(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "r"))
    write_grid(store, "s", ["m"], ["x86-cpu"], ["d"], utterances=5)
    done = CliRunner().invoke(app, ["compact", "--results", str(tmp_path / "r")])
    assert done.exit_code == 0 and "compacted 10 files" in done.stderr


def test_csv_has_unix_line_ends_and_no_trailing_blank_line(results: Path) -> None:
    for args in (("leaderboard", "--format", "csv"), ("query", "--format", "csv", "SELECT trial_id FROM trials")):
        out = run(*args, "--results", str(results))
        assert "\r" not in out and out.endswith("\n") and not out.endswith("\n\n"), args
        assert len(out.splitlines()) > 1


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_parquet('https://example.com/results.parquet')",
    "SELECT * FROM read_parquet('{results}/../../../etc/passwd')",
])
def test_query_reads_only_the_results_directory(results: Path, sql: str) -> None:
    done = CliRunner().invoke(app, ["query", "--results", str(results), sql.format(results=results)])
    assert done.exit_code == 2 and "read only the results directory" in done.stderr, done.output
    assert "Permission Error" in done.stderr


@pytest.mark.parametrize("sql", ["INSTALL httpfs", "LOAD httpfs", "SET enable_external_access = true",
                                 "COPY trials TO '/tmp/out.csv'"])
def test_query_takes_one_select_only(results: Path, sql: str) -> None:
    done = CliRunner().invoke(app, ["query", "--results", str(results), sql])
    assert done.exit_code == 2 and "read-only SELECT" in done.stderr


@pytest.mark.parametrize("sql", ["SET enable_external_access = true", "SET allowed_directories = ['/']",
                                 "RESET lock_configuration", "COPY trials TO '{out}/trials.csv'",
                                 "ATTACH '{out}/other.duckdb' AS other", "CREATE TABLE x AS SELECT * FROM read_csv('{csv}')"])
def test_the_connection_itself_is_sandboxed(results: Path, tmp_path: Path, sql: str) -> None:
    """Below the CLI's one-SELECT filter, the DuckDB connection the views live on refuses by itself."""
    (tmp_path / "data.csv").write_text("a\n1\n")
    (tmp_path / "out").mkdir()
    con = connect_results(Store(str(results)))
    with pytest.raises(duckdb.Error, match="locked|Permission"):
        con.execute(sql.format(out=tmp_path / "out", csv=tmp_path / "data.csv"))
    assert not list((tmp_path / "out").iterdir())
    assert con.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)


def test_query_reads_every_table_of_the_results(results: Path) -> None:
    out = json.loads(run("query", "--results", str(results), "--format", "json",
                         "SELECT (SELECT count(*) FROM utterances) AS u, (SELECT count(*) FROM trials_files) AS t"))
    assert out == [{"u": 11 * 80, "t": 11}]
