"""Re-scoring room: WER/CER again from the stored raw hypotheses under another normaliser; no model runs."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from results.queries import connect, fetch_arrow
from results.schema import SCHEMA_VERSION, TABLES
from results.store import Store
from workers.scoring import normalizer_version, score

# The utterances of every latest ok run that produced a hypothesis (an utterance that failed to load has none).
SCORABLE = """
SELECT u.sweep, u.trial_id, u.run_id, u.utt_id, u.reference, u.hypothesis
FROM utterances AS u JOIN trials AS t USING (sweep, trial_id, run_id)
WHERE t.status = 'ok' AND u.error IS NULL AND u.hypothesis IS NOT NULL
ORDER BY u.sweep, u.run_id, u.utt_id
"""
COUNTS = ("substitutions", "deletions", "insertions", "ref_words", "ref_chars", "char_errors")


@dataclass(frozen=True)
class Rescoring:
    scoring: str
    runs: int
    utterances: int


def scoring_version(normalizer: str, now: datetime) -> str:
    """Names sort by time within a normaliser; the run-time scoring's version is the bare normaliser name."""
    return f"{normalizer_version(normalizer)}@{now:%Y%m%dT%H%M%SZ}"


def _utterance_scores(rows: pa.Table, normalizer: str) -> dict[str, list[int]]:
    """Counts per row; identical (reference, hypothesis) pairs, common across quantizations, are scored once."""
    cache: dict[tuple[str, str], tuple[int, ...]] = {}
    counts: dict[str, list[int]] = {name: [] for name in COUNTS}
    for reference, hypothesis in zip(rows["reference"].to_pylist(), rows["hypothesis"].to_pylist()):
        key = (reference or "", hypothesis)
        if key not in cache:
            scored = score(*key, normalizer)
            cache[key] = tuple(getattr(scored, name) for name in COUNTS)
        for name, value in zip(COUNTS, cache[key]):
            counts[name].append(value)
    return counts


def _run_scores(utterances: pa.Table) -> pa.Table:
    errors = pc.add(pc.add(utterances["substitutions"], utterances["deletions"]), utterances["insertions"])
    sums = (utterances.append_column("word_errors", errors)
            .group_by(["schema_version", "sweep", "scoring", "normalizer", "scored_at", "trial_id", "run_id"])
            .aggregate([("word_errors", "sum"), ("ref_words", "sum"), ("char_errors", "sum"), ("ref_chars", "sum")]))
    words, chars = sums["ref_words_sum"], sums["ref_chars_sum"]
    safe_words = pc.if_else(pc.greater(words, 0), words, pa.scalar(None, pa.int64()))
    safe_chars = pc.if_else(pc.greater(chars, 0), chars, pa.scalar(None, pa.int64()))
    return pa.table({
        **{name: sums[name] for name in ("schema_version", "sweep", "scoring", "normalizer", "scored_at",
                                         "trial_id", "run_id")},
        "ref_words": words, "word_errors": sums["word_errors_sum"],
        "wer": pc.divide(pc.cast(sums["word_errors_sum"], pa.float64()), safe_words),
        "cer": pc.divide(pc.cast(sums["char_errors_sum"], pa.float64()), safe_chars),
    }).cast(TABLES["run_scores"])


def rescore(store: Store, normalizer: str, now: datetime | None = None) -> list[Rescoring]:
    """Score every latest ok run again under `normalizer`; one new scoring version per sweep."""
    now = now or datetime.now(timezone.utc)
    version = scoring_version(normalizer, now)
    rows = fetch_arrow(connect(store), SCORABLE)
    done = []
    for sweep in pc.unique(rows["sweep"]).to_pylist():
        mine = rows.filter(pc.equal(rows["sweep"], sweep))
        n = mine.num_rows
        utterances = pa.table({
            "schema_version": pa.array([SCHEMA_VERSION] * n, pa.int32()),
            "sweep": mine["sweep"], "scoring": pa.array([version] * n),
            "normalizer": pa.array([normalizer_version(normalizer)] * n),
            "scored_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
            "trial_id": mine["trial_id"], "run_id": mine["run_id"], "utt_id": mine["utt_id"],
            **{name: pa.array(values, pa.int32()) for name, values in _utterance_scores(mine, normalizer).items()},
        }).cast(TABLES["scores"])
        runs = _run_scores(utterances)
        store.write_scores(sweep, version, utterances, runs)
        done.append(Rescoring(version, runs.num_rows, n))
    return done
