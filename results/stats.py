"""Statistics room: bootstrap confidence intervals of corpus WER and paired tests of ΔWER, vectorised in numpy.

Corpus WER is a ratio of sums (word errors / reference words), so a resample draws utterances with
replacement and recomputes both sums. Every run of n utterances uses the same resample counts, drawn from
(seed, n): a run's interval does not depend on which other runs were computed beside it (so it can be
cached), and the bootstrap of many runs is two matrix products, not a loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
CONFIDENCE = 0.95
# Runs per block of matrix products: bounds memory at resamples x block floats per product.
BLOCK_RUNS = 2048


def resample_counts(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(resamples, n): how often each of n utterances is drawn in each resample; a function of its arguments only."""
    draws = np.random.default_rng([seed, n]).integers(0, n, size=(resamples, n))
    flat = draws + n * np.arange(resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0; resamples with no reference words (nan) are left out."""
    tails = [50 * (1 - confidence), 50 * (1 + confidence)]
    percentile = np.nanpercentile if np.isnan(samples).any() else np.percentile
    with np.errstate(invalid="ignore"):
        low, high = percentile(samples, tails, axis=0)
    return low, high


def corpus_wer(errors: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Per row: sum of word errors / sum of reference words (nan without reference words)."""
    return _ratio(errors.sum(axis=-1), words.sum(axis=-1))


def wer_interval(errors: np.ndarray, words: np.ndarray, counts: np.ndarray,
                 confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap interval of corpus WER for each row of (runs, n) errors/words under (resamples, n) counts."""
    return _interval(_ratio(counts @ errors.T, counts @ words.T), confidence)


@dataclass(frozen=True)
class PairedDelta:
    """ΔWER = WER(run) - WER(baseline) on the same utterances, its interval and two-sided p-value."""

    delta: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p: np.ndarray


def paired_delta(errors: np.ndarray, words: np.ndarray, base_errors: np.ndarray, base_words: np.ndarray,
                 counts: np.ndarray, confidence: float = CONFIDENCE) -> PairedDelta:
    """Paired bootstrap: both runs resampled with the same utterances, so only their difference varies.

    p is the share of resampled differences at least as far from the observed one as the observed one is
    from 0 (the bootstrap distribution shifted to the null), with the usual +1 so it is never 0.
    """
    delta = corpus_wer(errors, words) - corpus_wer(base_errors, base_words)
    resampled = _ratio(counts @ errors.T, counts @ words.T) - _ratio(counts @ base_errors.T, counts @ base_words.T)
    low, high = _interval(resampled, confidence)
    # Tolerance: an observed difference of exactly 0 must count every resample (p = 1) despite rounding.
    with np.errstate(invalid="ignore"):
        extreme = np.abs(resampled - delta) >= np.abs(delta) - 1e-12
    valid = (~np.isnan(resampled)).sum(axis=0)  # resamples without reference words have no ΔWER
    p = (1 + extreme.sum(axis=0)) / (1 + valid)
    return PairedDelta(delta, low, high, p)


def qoi(errors: np.ndarray, words: np.ndarray, base_errors: np.ndarray, base_words: np.ndarray) -> np.ndarray:
    """Share of utterances whose WER is no worse than the baseline's (an empty reference counts errors)."""
    return (errors / np.maximum(words, 1) <= base_errors / np.maximum(base_words, 1)).mean(axis=-1)


def blocks(lengths: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ragged runs (rows stored run after run) -> per length n: (which runs, (runs, n) row indices).

    Runs of equal length share the resample counts, so each length becomes one matrix.
    """
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    out = []
    for n in np.unique(lengths):
        if n == 0:
            continue
        runs = np.flatnonzero(lengths == n)
        for chunk in np.array_split(runs, max(1, -(-len(runs) // BLOCK_RUNS))):
            out.append((chunk, starts[chunk][:, None] + np.arange(n)))
    return out


@dataclass(frozen=True)
class RunIntervals:
    wer_ci_low: np.ndarray
    wer_ci_high: np.ndarray


def run_intervals(lengths: np.ndarray, errors: np.ndarray, words: np.ndarray, resamples: int = DEFAULT_RESAMPLES,
                  seed: int = DEFAULT_SEED, confidence: float = CONFIDENCE) -> RunIntervals:
    """WER intervals of many runs; rows are utterances stored run after run, `lengths[i]` rows for run i."""
    low, high = np.full(len(lengths), np.nan), np.full(len(lengths), np.nan)
    for runs, rows in blocks(lengths):
        counts = resample_counts(rows.shape[1], resamples, seed)
        low[runs], high[runs] = wer_interval(errors[rows], words[rows], counts, confidence)
    return RunIntervals(low, high)


@dataclass(frozen=True)
class PairedStats:
    delta_wer_ci_low: np.ndarray
    delta_wer_ci_high: np.ndarray
    delta_wer_p: np.ndarray
    qoi: np.ndarray
    identical_rate: np.ndarray


def paired_stats(lengths: np.ndarray, errors: np.ndarray, words: np.ndarray, base_errors: np.ndarray,
                 base_words: np.ndarray, identical: np.ndarray, resamples: int = DEFAULT_RESAMPLES,
                 seed: int = DEFAULT_SEED, confidence: float = CONFIDENCE) -> PairedStats:
    """Paired statistics of many runs against their baselines; rows are paired utterances, run after run."""
    out = {name: np.full(len(lengths), np.nan) for name in PairedStats.__dataclass_fields__}
    for runs, rows in blocks(lengths):
        counts = resample_counts(rows.shape[1], resamples, seed)
        paired = paired_delta(errors[rows], words[rows], base_errors[rows], base_words[rows], counts, confidence)
        out["delta_wer_ci_low"][runs], out["delta_wer_ci_high"][runs] = paired.low, paired.high
        out["delta_wer_p"][runs] = paired.p
        out["qoi"][runs] = qoi(errors[rows], words[rows], base_errors[rows], base_words[rows])
        out["identical_rate"][runs] = identical[rows].mean(axis=1)
    return PairedStats(**out)
