"""Bootstrap statistics against small cases worked out by hand, and the coverage of a zero difference."""
from __future__ import annotations

import numpy as np
import pytest

from results.stats import (blocks, corpus_wer, paired_delta, paired_stats, qoi, resample_counts, run_intervals,
                           wer_interval)


def test_resample_counts_draw_n_utterances_per_resample_and_depend_only_on_their_arguments() -> None:
    counts = resample_counts(7, resamples=50, seed=3)
    assert counts.shape == (50, 7)
    assert (counts.sum(axis=1) == 7).all()
    assert np.array_equal(counts, resample_counts(7, resamples=50, seed=3))
    assert not np.array_equal(counts, resample_counts(7, resamples=50, seed=4))


def test_wer_interval_by_hand() -> None:
    # errors 1, 0, 2 over 10 words each; four resamples chosen by hand:
    # all of #0 -> 0.1, all of #1 -> 0.0, all of #2 -> 0.2, one of each -> 0.1.
    counts = np.array([[3, 0, 0], [0, 3, 0], [0, 0, 3], [1, 1, 1]], dtype=float)
    low, high = wer_interval(np.array([[1.0, 0, 2]]), np.array([[10.0, 10, 10]]), counts)
    # sorted 0, .1, .1, .2; linear percentiles: 2.5% at rank 0.075 -> 0.0075, 97.5% at 2.925 -> 0.1925
    assert low[0] == pytest.approx(0.0075)
    assert high[0] == pytest.approx(0.1925)


def test_corpus_wer_is_a_ratio_of_sums_not_a_mean_of_ratios() -> None:
    # 1 error in 2 words and 0 in 8: corpus WER 1/10, not (0.5 + 0) / 2
    assert corpus_wer(np.array([1.0, 0]), np.array([2.0, 8])) == pytest.approx(0.1)


def test_paired_delta_by_hand() -> None:
    # run: 2 and 0 errors; baseline: 1 and 0; 10 words each. Observed ΔWER = 0.10 - 0.05 = 0.05.
    errors, base, words = np.array([[2.0, 0]]), np.array([[1.0, 0]]), np.array([[10.0, 10]])
    counts = np.array([[2, 0], [0, 2], [1, 1]], dtype=float)  # resampled Δ: 0.10, 0.00, 0.05
    paired = paired_delta(errors, words, base, words, counts)
    assert paired.delta[0] == pytest.approx(0.05)
    # |Δ* - 0.05| = 0.05, 0.05, 0: two of three at least |0.05| -> p = (1 + 2) / (1 + 3)
    assert paired.p[0] == pytest.approx(0.75)
    assert paired.low[0] == pytest.approx(0.0025)  # 2.5% of sorted 0, .05, .10 at rank 0.05
    assert paired.high[0] == pytest.approx(0.0975)


def test_identical_runs_differ_by_exactly_zero_with_p_one() -> None:
    rng = np.random.default_rng(1)
    words = rng.integers(5, 30, size=(1, 40)).astype(float)
    errors = rng.binomial(words.astype(int), 0.1).astype(float)
    paired = paired_delta(errors, words, errors, words, resample_counts(40))
    assert paired.delta[0] == 0 and paired.low[0] == 0 and paired.high[0] == 0
    assert paired.p[0] == 1


def test_a_consistent_degradation_is_significant_at_the_smallest_p() -> None:
    words = np.full((1, 100), 20.0)
    base = np.ones((1, 100))
    paired = paired_delta(base + 1, words, base, words, resample_counts(100, 1000))
    assert paired.delta[0] == pytest.approx(0.05)
    assert paired.p[0] == pytest.approx(1 / 1001)
    assert paired.low[0] > 0


def test_zero_true_difference_interval_contains_zero_in_at_least_90_of_100_repetitions() -> None:
    # Both systems draw errors from the same distribution, independently per utterance: ΔWER's truth is 0.
    rng = np.random.default_rng(2024)
    repetitions, n = 100, 100
    words = rng.integers(5, 40, size=(repetitions, n)).astype(float)
    errors = rng.binomial(words.astype(int), 0.08).astype(float)
    base = rng.binomial(words.astype(int), 0.08).astype(float)
    paired = paired_delta(errors, words, base, words, resample_counts(n, 1000, seed=7))
    contains = ((paired.low <= 0) & (paired.high >= 0)).sum()
    assert contains >= 90, contains
    assert contains < 100  # the test could fail: intervals are not so wide that they always contain 0
    assert ((paired.p >= 0.05) == ((paired.low <= 0) & (paired.high >= 0))).mean() > 0.9


def test_qoi_counts_utterances_no_worse_than_the_baseline() -> None:
    # per utterance WER: run .1 .0 .5 .2 vs baseline .1 .1 .0 .3 -> no worse on #0, #1, #3: 3/4
    run = np.array([1.0, 0, 1, 2]), np.array([10.0, 10, 2, 10])
    base = np.array([1.0, 1, 0, 3]), np.array([10.0, 10, 2, 10])
    assert qoi(run[0], run[1], base[0], base[1]) == pytest.approx(0.75)


def test_blocks_group_ragged_runs_by_length() -> None:
    # runs of 2, 3, 0 and 2 rows, stored one after another
    got = {int(rows.shape[1]): (runs.tolist(), rows.tolist()) for runs, rows in blocks(np.array([2, 3, 0, 2]))}
    assert got == {2: ([0, 3], [[0, 1], [5, 6]]), 3: ([1], [[2, 3, 4]])}


def test_a_runs_interval_does_not_depend_on_the_runs_computed_beside_it() -> None:
    rng = np.random.default_rng(5)
    lengths = np.array([30, 12, 30, 0])
    words = rng.integers(3, 20, size=lengths.sum()).astype(float)
    errors = rng.binomial(words.astype(int), 0.2).astype(float)
    together = run_intervals(lengths, errors, words, resamples=200, seed=9)
    alone = run_intervals(lengths[:1], errors[:30], words[:30], resamples=200, seed=9)
    assert together.wer_ci_low[0] == alone.wer_ci_low[0] and together.wer_ci_high[0] == alone.wer_ci_high[0]
    assert np.isnan(together.wer_ci_low[3])  # a run without scored utterances has no interval
    own = wer_interval(errors[None, 30:42], words[None, 30:42], resample_counts(12, 200, 9))
    assert together.wer_ci_low[1] == own[0][0]


def test_paired_stats_identical_rate_and_resamples_without_words() -> None:
    errors = np.array([0.0, 1, 0, 0])
    words = np.array([0.0, 0, 5, 5])  # two empty references: some resamples have no words at all
    stats = paired_stats(np.array([4]), errors, words, errors, words, np.array([True, True, False, True]),
                         resamples=300, seed=1)
    assert stats.identical_rate[0] == pytest.approx(0.75)
    assert stats.delta_wer_p[0] == 1 and stats.qoi[0] == 1
    assert stats.delta_wer_ci_low[0] == 0  # resamples without reference words are left out, not NaN
