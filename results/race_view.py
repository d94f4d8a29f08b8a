"""Race view room: `leaderboard --view race`, per race group: the complete trials, apart from them the trials
the race stopped (numbers over the utterances they were scored on), each trial's rungs, and the compute the
race spent against its estimate of the full grid's."""
from __future__ import annotations

from collections import Counter, defaultdict

import duckdb
import numpy as np

from results.queries import fetch
from results.stats import run_intervals
from results.tables import Table, megabytes, missing, number, pct

TRIALS = """
SELECT * FROM trials WHERE race_group IS NOT NULL AND status IN ('ok', 'stopped', 'racing', 'failed') {where}
ORDER BY race_group, status, wer, quantization
"""
# Each trial's latest run, utterance by utterance, in rung order: per-rung WER and the bootstrap interval.
UTTERANCES = """
SELECT u.trial_id, u.rung, (u.substitutions + u.deletions + u.insertions)::DOUBLE AS errors, u.ref_words::DOUBLE AS words
FROM utterances AS u JOIN trials AS t USING (sweep, trial_id, run_id)
WHERE t.race_group IS NOT NULL AND u.error IS NULL {where}
ORDER BY u.trial_id, u.rung, u.utt_id
"""
LEGEND = ("numbers of a stopped or racing trial are over the utterances it was scored on (column `utts`); "
          "WER [95% CI]: bootstrap over those utterances")


def _rung_wers(rows: list[tuple]) -> dict[str, list[float]]:
    """trial -> WER after each rung (cumulative)."""
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    for trial_id, rung, errors, words in rows:
        sums[trial_id][rung][0] += errors
        sums[trial_id][rung][1] += words
    out = {}
    for trial_id, by_rung in sums.items():
        errors, words, wers = 0.0, 0.0, []
        for rung in sorted(by_rung):
            errors, words = errors + by_rung[rung][0], words + by_rung[rung][1]
            wers.append(errors / words if words else float("nan"))
        out[trial_id] = wers
    return out


def _intervals(rows: list[tuple]) -> dict[str, tuple[float, float]]:
    counts = Counter(r[0] for r in rows)  # rows come trial after trial
    trials = list(counts)
    lengths = np.array([counts[t] for t in trials])
    found = run_intervals(lengths, np.array([r[2] for r in rows]), np.array([r[3] for r in rows]))
    return {t: (found.wer_ci_low[i], found.wer_ci_high[i]) for i, t in enumerate(trials)}


def _wer_cell(row: dict, interval: tuple[float, float] | None) -> str:
    if missing(row["wer"]):
        return "-"
    if interval is None or missing(interval[0]):
        return pct(row["wer"])
    return f"{pct(row['wer'])} [{interval[0] * 100:.2f}–{interval[1] * 100:.2f}]"


COLUMNS = ("race_group", "trial_id", "quantization", "status", "race_rung", "race_rungs", "n_utterances",
           "race_dataset_utterances", "wer", "rtf", "model_size_bytes", "race_dominated_by", "race_reason",
           "compute_s", "grid_estimate_s")


def race(con: duckdb.DuckDBPyConnection, sweep: str | None = None) -> list[Table]:
    where, params = ("AND t.sweep = ?", [sweep]) if sweep else ("", [])
    columns, trials = fetch(con, TRIALS.format(where=where.replace("t.", "")), params)
    trials = [dict(zip(columns, r)) for r in trials]
    _, utterances = fetch(con, UTTERANCES.format(where=where), params)
    wers, intervals = _rung_wers(utterances), _intervals(utterances) if utterances else {}
    labels = {r["trial_id"]: r["quantization"] for r in trials}
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in trials:
        groups[row["race_group"]].append(row)
    tables = []
    for name, group in groups.items():
        spent = sum(r["compute_s"] or 0 for r in group)
        estimate = sum(r["grid_estimate_s"] or 0 for r in group)
        saving = (f"compute: {spent:.0f} s measured, against an ESTIMATED {estimate:.0f} s for the full grid "
                  f"({spent / estimate:.0%} of it; estimate: each trial's one-off seconds + its timed seconds per "
                  "scored audio second x the dataset's audio)") if estimate else "compute: no estimate yet"
        for title, members in ((f"{name}: complete on every utterance", [r for r in group if r["status"] == "ok"]),
                               (f"{name}: stopped early by the race, or still racing",
                                [r for r in group if r["status"] != "ok"])):
            if not members:
                continue
            human = [[r["quantization"], r["status"], f"{r['race_rung']}/{r['race_rungs']}",
                      f"{r['n_utterances']}/{r['race_dataset_utterances']}",
                      _wer_cell(r, intervals.get(r["trial_id"])),
                      " / ".join(pct(w, 1) for w in wers.get(r["trial_id"], [])), number(r["rtf"]),
                      megabytes(r["model_size_bytes"]), labels.get(r["race_dominated_by"], r["race_dominated_by"] or ""),
                      r["race_reason"] or (r["error"] or "")[:120], f"{r['compute_s'] or 0:.1f}",
                      number(r["grid_estimate_s"], 1)] for r in members]
            tables.append(Table(title, list(COLUMNS), [tuple(r[c] for c in COLUMNS) for r in members],
                                ["quantization", "status", "rungs", "utts", "WER [95% CI]", "WER by rung", "RTF",
                                 "size", "stopped by", "why", "spent s", "grid est. s"], human,
                                [LEGEND, saving]))
    return tables
