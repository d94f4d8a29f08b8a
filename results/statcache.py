"""Stats cache room: bootstrap statistics of every leaderboard run, computed when missing and kept as Parquet.

Decision: computed on demand, then cached. A row of `table=stats` is keyed by (run_id, scoring version,
baseline run_id, baseline scoring version, resamples, seed): a re-run has a new run_id, a re-scoring a new
scoring version, a newer baseline a new baseline run_id, so a cached row is never stale, only unused.
The leaderboard, ladder and report fill what is missing before they read (`fill`); the first leaderboard
over 10,000 new runs pays the bootstrap (seconds), every later one reads the cache (milliseconds). A
results directory that cannot be written to still gets its statistics, for this connection only.
"""
from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from results.queries import fetch_arrow
from results.schema import SCHEMA_VERSION, TABLES
from results.stats import paired_stats, run_intervals
from results.store import Store

# Utterance rows of each pending run under its scoring, run after run (`idx` is the run's position).
RUN_ROWS = """
SELECT p.idx, a.word_errors::DOUBLE AS errors, a.ref_words::DOUBLE AS words
FROM pending AS p JOIN scores AS a ON a.run_id = p.run_id AND a.scoring = p.scoring
ORDER BY p.idx, a.utt_id
"""
# Utterances both the run and its baseline scored, paired by utt_id.
PAIRED_ROWS = """
SELECT p.idx, a.word_errors::DOUBLE AS errors, a.ref_words::DOUBLE AS words,
       b.word_errors::DOUBLE AS base_errors, b.ref_words::DOUBLE AS base_words,
       a.hypothesis IS NOT DISTINCT FROM b.hypothesis AS identical
FROM pending AS p
JOIN scores AS a ON a.run_id = p.run_id AND a.scoring = p.scoring
JOIN scores AS b ON b.run_id = p.baseline_run_id AND b.scoring = p.baseline_scoring AND b.utt_id = a.utt_id
ORDER BY p.idx, a.utt_id
"""


def _lengths(idx: pa.ChunkedArray, runs: int) -> np.ndarray:
    return np.bincount(idx.to_numpy(), minlength=runs)


def compute(con: duckdb.DuckDBPyConnection, pending: pa.Table, resamples: int, seed: int) -> pa.Table:
    """Statistics of the pending (sweep, run_id, scoring, baseline_run_id, baseline_scoring) rows."""
    runs = pending.num_rows
    con.register("pending", pending.append_column("idx", pa.array(np.arange(runs))))
    own = fetch_arrow(con, RUN_ROWS)
    own_lengths = _lengths(own["idx"], runs)
    intervals = run_intervals(own_lengths, own["errors"].to_numpy(), own["words"].to_numpy(), resamples, seed)
    paired = fetch_arrow(con, PAIRED_ROWS)
    paired_lengths = _lengths(paired["idx"], runs)
    deltas = paired_stats(paired_lengths, *(paired[c].to_numpy() for c in
                                            ("errors", "words", "base_errors", "base_words")),
                          paired["identical"].to_numpy(zero_copy_only=False), resamples, seed)
    con.unregister("pending")
    columns = {
        "schema_version": pa.array(np.full(runs, SCHEMA_VERSION), pa.int32()),
        **{name: pending[name] for name in ("sweep", "run_id", "scoring", "baseline_run_id", "baseline_scoring")},
        "resamples": pa.array(np.full(runs, resamples), pa.int32()),
        "seed": pa.array(np.full(runs, seed), pa.int64()),
        "n_utterances": pa.array(own_lengths, pa.int32()),
        "n_paired": pa.array(paired_lengths, pa.int32()),
        "wer_ci_low": intervals.wer_ci_low, "wer_ci_high": intervals.wer_ci_high,
        **{name: getattr(deltas, name) for name in
           ("delta_wer_ci_low", "delta_wer_ci_high", "delta_wer_p", "qoi", "identical_rate")},
    }
    # numpy nan -> null, so "not computed" reads as NULL in SQL rather than as NaN
    arrays = {k: pa.array(v, from_pandas=True) if isinstance(v, np.ndarray) else v for k, v in columns.items()}
    return pa.table(arrays).cast(TABLES["stats"])


def fill(con: duckdb.DuckDBPyConnection, store: Store) -> int:
    """Compute the statistics the views lack, write them to the store, and show them to `con`; how many."""
    pending = fetch_arrow(con, "SELECT * FROM stats_pending ORDER BY sweep, run_id")
    if pending.num_rows == 0:
        return 0
    (resamples, seed), = con.sql("SELECT resamples, seed FROM settings").fetchall()
    fresh = compute(con, pending, resamples, seed)
    try:
        for sweep in pc.unique(fresh["sweep"]).to_pylist():
            store.write_stats(sweep, fresh.filter(pc.equal(fresh["sweep"], sweep)))
    except OSError:  # a read-only results directory: statistics for this session only
        pass
    con.register("fresh", fresh)
    con.execute("INSERT INTO stats_files BY NAME SELECT * FROM fresh")
    con.unregister("fresh")
    return pending.num_rows
