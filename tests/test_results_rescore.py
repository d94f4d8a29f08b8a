"""Re-scoring from the stored raw hypotheses under another normaliser, and choosing the scoring version."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from conftest import quantsweep
from results.queries import connect, fetch, scorings
from results.store import Store
from results.synthetic import FP32, QUANTIZATIONS, START, trial_row
from sweep.rescore import rescore

# (reference, fp32 hypothesis, int8 hypothesis). Scored at run time with `none` (text as it is):
# fp32 matches exactly; int8 differs in case and punctuation only, which `basic` forgives.
CLIPS = [("Hello, world.", "Hello, world.", "hello world"),
         ("The cat sat.", "The cat sat.", "the cat sat"),
         ("Good morning", "Good morning", "Good morning")]


def write(store: Store) -> None:
    for q, column in ((FP32, 1), (QUANTIZATIONS[1], 2)):
        trial_id = f"t-{q.label}"
        rows = []
        for i, clip in enumerate(CLIPS):
            ref, hyp = clip[0].split(), clip[column].split()
            subs = sum(a != b for a, b in zip(ref, hyp))
            rows.append({"sweep": "s", "trial_id": trial_id, "run_id": f"{trial_id}-run", "utt_id": f"u{i}",
                         "duration_s": 2.0, "reference": clip[0], "hypothesis": clip[column], "normalizer": "none",
                         "substitutions": subs, "deletions": 0, "insertions": 0, "ref_words": len(ref),
                         "ref_chars": len(clip[0]), "char_errors": subs})
        row = trial_row("s", trial_id, f"{trial_id}-run", "m", "x86-cpu", "d", q, rows, np.random.default_rng(0),
                        START)
        store.write_trial("s", trial_id, row, rows)


def leaderboard_wer(store: Store, scoring: str) -> dict[str, tuple[str, float]]:
    con = connect(store, scoring)
    return {q: (s, w) for q, s, w in fetch(con, "SELECT quantization, scoring, wer FROM leaderboard")[1]}


def test_rescore_writes_a_new_version_and_views_choose_it(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "results"))
    write(store)
    # run time, normaliser none: int8 has 2 + 2 + 0 = 4 substitutions in 7 words
    assert leaderboard_wer(store, "latest")["torch-dynamic-int8"] == ("none", pytest.approx(4 / 7))
    done = rescore(store, "basic", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert [(r.scoring, r.runs, r.utterances) for r in done] == [("basic@20260102T030405Z", 2, 6)]
    latest = leaderboard_wer(store, "latest")
    assert latest["torch-dynamic-int8"] == ("basic@20260102T030405Z", 0.0)
    assert latest["fp32"] == ("basic@20260102T030405Z", 0.0)
    assert leaderboard_wer(store, "original")["torch-dynamic-int8"][1] == pytest.approx(4 / 7)
    assert leaderboard_wer(store, "none")["torch-dynamic-int8"][1] == pytest.approx(4 / 7)
    # `none` again, later: the same counts as at run time, under a third version
    rescore(store, "none", datetime(2026, 1, 3, tzinfo=timezone.utc))
    con = connect(store)
    assert scorings(con) == ["none", "basic@20260102T030405Z", "none@20260103T000000Z"]
    assert leaderboard_wer(store, "latest")["torch-dynamic-int8"] == ("none@20260103T000000Z", pytest.approx(4 / 7))
    assert leaderboard_wer(store, "basic@20260102T030405Z")["torch-dynamic-int8"][1] == 0.0
    # per-utterance counts of the re-scoring are in the scores view, beside the run-time ones
    rows = fetch(con, "SELECT utt_id, word_errors FROM scores WHERE scoring = 'basic@20260102T030405Z' "
                      "AND trial_id = 't-torch-dynamic-int8' ORDER BY utt_id")[1]
    assert rows == [("u0", 0), ("u1", 0), ("u2", 0)]


def test_rescore_and_leaderboard_through_the_cli(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write(Store(str(results)))
    done = quantsweep("rescore", "--normalizer", "basic", "--results", str(results))
    assert "2 runs, 6 utterances" in done.stderr
    board = json.loads(quantsweep("leaderboard", "--results", str(results), "--format", "json").stdout)
    assert {b["quantization"]: b["wer"] for b in board} == {"fp32": 0.0, "torch-dynamic-int8": 0.0}
    original = json.loads(quantsweep("leaderboard", "--results", str(results), "--format", "json",
                                     "--scoring", "original").stdout)
    assert {b["quantization"]: b["scoring"] for b in original} == {"fp32": "none", "torch-dynamic-int8": "none"}
