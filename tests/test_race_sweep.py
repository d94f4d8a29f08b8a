"""An adaptive sweep end to end: real tiny.en, real speech, embedded Ray, Parquet rows as the race's state.

The race is interrupted (Ctrl-C) as soon as its first `racing` row is on disk, then run again: it continues
from the rows (the first rungs are not run again), stops the trial another one dominates, and finishes the rest.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, quantsweep, write_spec
from results.store import Store

SPEC = {
    "sweep": "race", "models": ["whisper-tiny.en"],
    "quantization": [{"library": "none", "dtype": "fp32"}, {"library": "torch", "scheme": "dynamic-int8"},
                     # stored in float32: the size of fp32, and far worse: fp32 dominates it
                     {"library": "ptq", "method": "rtn", "weight_bits": 2, "granularity": "per-channel"}],
    "datasets": [{"name": "samples", "source": "samples"}],  # 14 clips: rungs of 10 and 14
    "eval": {"max_new_tokens": 24, "memory": "off"},
    "strategy": "adaptive", "adaptive": {"objectives": ["wer", "model_size_bytes"], "first_rung": 10},
}


def _rows(results: Path) -> dict[str, dict]:
    return {r["quantization"]: r for r in Store(str(results)).read("trials", "race").to_pylist()}


def _interrupted_at_first_racing_row(spec: Path, results: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "sweep.cli", "run", str(spec), "--results", str(results)],
                               cwd=ROOT, env=os.environ | {"TOKENIZERS_PARALLELISM": "false"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    trials = results / "table=trials" / "sweep=race"
    while not list(trials.glob("*.racing.parquet")):
        assert process.poll() is None, "the run ended before any racing row"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) != 0


@pytest.fixture(scope="module")
def race(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict], str]:
    work = tmp_path_factory.mktemp("race")
    spec, results = write_spec(work / "race.yaml", SPEC), work / "runs"
    _interrupted_at_first_racing_row(spec, results)
    before = {q: r for q, r in _rows(results).items() if r["status"] == "racing"}
    assert before, "the interrupted run left no racing row"
    done = quantsweep("run", str(spec), "--results", str(results))
    return results, before, done.stdout + done.stderr


def test_an_interrupted_race_resumes_from_its_rows(race: tuple[Path, dict[str, dict], str]) -> None:
    results, before, _ = race
    rows = _rows(results)
    utterances = Store(str(results)).read("utterances", "race").to_pylist()
    for label, racing in before.items():
        row = rows[label]
        assert row["run_id"] == racing["run_id"], "the race started the trial again instead of continuing it"
        first = [u for u in utterances if u["trial_id"] == row["trial_id"] and u["rung"] == 1]
        assert len(first) == 10 and {u["run_id"] for u in first} == {racing["run_id"]}
        assert row["compute_s"] > racing["compute_s"]  # rung 2 added to what rung 1 spent, not replaced
    for label in ("fp32", "torch-dynamic-int8"):
        # the worker keeps a racing trial's model between its rungs; only a restart of the driver (new
        # workers) made the trials that had run rung 1 before it quantize again
        assert rows[label]["race_requantized"] == (1 if label in before else 0), label


def test_the_dominated_trial_is_stopped_with_its_reason_and_the_rest_complete(
        race: tuple[Path, dict[str, dict], str]) -> None:
    results, _, _ = race
    rows = _rows(results)
    stopped = rows["ptq-rtn-w2-pc"]
    assert stopped["status"] == "stopped" and stopped["race_rung"] == 1 and stopped["n_utterances"] == 10
    assert stopped["race_dominated_by"] in {rows["fp32"]["trial_id"], rows["torch-dynamic-int8"]["trial_id"]}
    assert "95% confidence" in stopped["race_reason"] and "WER lower" in stopped["race_reason"]
    assert stopped["race_rungs"] == 2 and stopped["race_dataset_utterances"] == 14
    assert stopped["grid_estimate_s"] > stopped["compute_s"]  # the whole set would have cost more
    for label in ("fp32", "torch-dynamic-int8"):
        row = rows[label]
        assert row["status"] == "ok" and row["race_rung"] == 2 and row["n_utterances"] == 14, label
        per_utterance = [u for u in Store(str(results)).read("utterances", "race").to_pylist()
                         if u["trial_id"] == row["trial_id"] and u["run_id"] == row["run_id"]]
        errors = sum(u["substitutions"] + u["deletions"] + u["insertions"] for u in per_utterance)
        assert row["word_errors"] == errors and sorted(u["rung"] for u in per_utterance) == [1] * 10 + [2] * 4


def test_race_view_shows_stopped_trials_apart_with_the_compute_saved(race: tuple[Path, dict[str, dict], str]) -> None:
    results, _, _ = race
    text = quantsweep("leaderboard", "--results", str(results), "--view", "race").stdout
    complete, _, stopped = text.partition("stopped early by the race")
    assert "fp32" in complete and "ptq-rtn-w2-pc" not in complete
    assert "ptq-rtn-w2-pc" in stopped and "10/14" in stopped and "1/2" in stopped
    assert "ESTIMATED" in text
    # the default leaderboard ranks complete trials only
    board = quantsweep("leaderboard", "--results", str(results), "--format", "csv").stdout
    assert "fp32" in board and "ptq-rtn-w2-pc" not in board
