"""The race's statistics and schedule without Ray: bounds, dominance, false stops over synthetic truths."""
from __future__ import annotations

import math

import numpy as np
import pytest

from results.race import Contender, Rules, decide, dominating_pairs, front, t_quantile, upper_bound
from results.race_truths import SCENARIOS, false_stops
from workers.datasets import Utterance
from workers.rungs import Kept, Rung, race_order, rung_ends, stratum

NOMINAL = 0.05
ENDS = rung_ends(300, 30, 2.0)


def _t_tail(x: float, df: int) -> float:
    grid = np.linspace(x, 400.0, 400_001)
    density = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2)) * (1 + grid**2 / df) ** (
        -(df + 1) / 2)
    return float(np.trapezoid(density, grid))


@pytest.mark.parametrize(("p", "df"), [(0.975, 10), (0.9995, 29), (1 - 1e-5, 29), (1 - 1e-7, 9), (0.9999, 10)])
def test_t_quantile_has_its_tail_probability(p: float, df: int) -> None:
    assert _t_tail(t_quantile(p, df), df) == pytest.approx(1 - p, rel=1e-4)


def test_upper_bound_is_exact_once_every_utterance_is_seen_and_grows_with_confidence() -> None:
    diffs = np.array([1.0, -2.0, 0.5, 0.0, 3.0, -1.0, 2.0, 1.0, 0.0, -0.5])
    assert upper_bound(diffs, population=10, alpha=1e-6) == pytest.approx(diffs.mean())
    loose, tight = upper_bound(diffs, 1000, 1e-4), upper_bound(diffs, 1000, 0.05)
    assert loose > tight > diffs.mean()
    # the finite-population correction: a sample of half the set is tighter than one of a tiny share
    assert upper_bound(diffs, 20, 0.05) < upper_bound(diffs, 10_000, 0.05)


def _contender(name: str, errors: list[float], seconds: list[float], size: float) -> Contender:
    return Contender(name, np.array(errors), np.full(len(errors), 10.0), np.array(seconds), size)


def test_a_trial_better_on_every_objective_stops_the_other_and_says_why() -> None:
    rng = np.random.default_rng(0)
    good = _contender("good", list(rng.poisson(1, 60)), list(rng.normal(1, 0.05, 60)), 100)
    bad = _contender("bad", list(rng.poisson(6, 60)), list(rng.normal(2, 0.05, 60)), 120)
    rules = Rules(("wer", "rtf", "model_size_bytes"), 0.95, 0.1, looks=3, population=300, pairs=1)
    (stop,) = decide([good, bad], rules)
    assert (stop.trial_id, stop.dominated_by) == ("bad", "good")
    assert "WER lower" in stop.reason and "RTF lower by more than 10%" in stop.reason and "smaller" in stop.reason
    # smaller but worse is not dominated; nor is a trial only as good on a measured objective
    assert decide([good, _contender("small", list(rng.poisson(6, 60)), list(rng.normal(2, .05, 60)), 50)],
                  rules) == []
    assert decide([good, _contender("twin", list(good.errors), list(good.seconds), 120)], rules) == []


def test_dominating_pairs_counts_only_pairs_size_allows() -> None:
    assert dominating_pairs([1, 2, 3], ("wer",)) == 6
    assert dominating_pairs([1, 2, 3], ("wer", "model_size_bytes")) == 3
    assert dominating_pairs([1, 1, None], ("wer", "model_size_bytes")) == 2


def test_front_of_point_values() -> None:
    points = {"a": {"wer": 0.1, "model_size_bytes": 10}, "b": {"wer": 0.2, "model_size_bytes": 5},
              "c": {"wer": 0.2, "model_size_bytes": 10}, "d": {"wer": 0.1, "model_size_bytes": 10}}
    assert front(points, ("wer", "model_size_bytes")) == {"a", "b", "d"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("objectives", [("wer", "rtf", "model_size_bytes"), ("wer", "model_size_bytes")])
def test_false_stop_rate_over_synthetic_truths_is_at_most_nominal(scenario: str, objectives: tuple[str, ...]) -> None:
    """Many seeds of groups with near-ties and hallucinating trials: the share of races that stop any trial of
    the true front stays at most 1 - confidence; looking at every rung without the Bonferroni split does not."""
    valid = false_stops(scenario, 120, ENDS, objectives, 1 - NOMINAL, 0.1)
    print(f"{scenario} {objectives}: false stops in {valid.any_false_stop:.3f} of races, "
          f"{valid.front_trials_stopped:.4f} of front trials; {valid.compute_share:.2f} of the grid's utterances")
    assert valid.any_false_stop <= NOMINAL
    assert valid.compute_share < 1 or scenario == "hallucinations"  # it does stop trials


def test_uncorrected_looks_exceed_the_nominal_level() -> None:
    """The check above can fail: repeated looks without the split stop front trials far more often."""
    naive = false_stops("hallucinations", 120, ENDS, ("wer", "model_size_bytes"), 1 - NOMINAL, 0.0, corrected=False)
    assert naive.any_false_stop > 2 * NOMINAL


def _utterances(ids: list[str]) -> list[Utterance]:
    return [Utterance(i, "", np.zeros(1, np.float32), 1.0) for i in ids]


def test_race_order_is_seeded_stratified_and_chunks_partition_it() -> None:
    ids = [f"voice{v}/snr{s}/{n:03d}" for v in range(3) for s in range(2) for n in range(20)]
    order = race_order(ids, seed=7)
    assert order == race_order(list(reversed(ids)), seed=7) != race_order(ids, seed=8)
    first = order[:30]  # every stratum in proportion (20 of 120 each -> 5 of 30)
    assert sorted({stratum(u) for u in first}) == sorted({stratum(u) for u in ids})
    assert all(abs(sum(stratum(u) == s for u in first) - 5) <= 1 for s in {stratum(u) for u in ids})
    assert stratum("1089-134686-0000") == "1089-134686"
    ends = rung_ends(len(ids), 30, 2.0)
    assert ends == [30, 60, 120]
    chunks = [Rung(r, 30, 2.0, 7).chunk(_utterances(ids)) for r in (1, 2, 3)]
    assert [u.utt_id for c in chunks for u in c] == order


def test_kept_models_stay_within_their_budget_least_recently_used_first() -> None:
    kept = Kept(budget=100)
    kept.put(("a",), "A", 40)
    kept.put(("b",), "B", 40)
    assert kept.get(("a",)) == "A"  # a is now the most recent
    kept.put(("c",), "C", 40)
    assert kept.get(("b",)) is None and kept.get(("a",)) == "A" and kept.get(("c",)) == "C"
    kept.put(("huge",), "H", 101)
    assert kept.get(("huge",)) is None


BASE = {"sweep": "s", "models": [{"name": "m", "packaged": "whisper-tiny.en", "family": "whisper"}],
        "quantization": [{"library": "none", "dtype": "fp32"}], "datasets": [{"name": "d", "source": "samples"}]}


def test_spec_strategy_defaults_to_grid_and_adaptive_settings_are_checked() -> None:
    from sweep.spec import SpecError, parse_spec

    assert parse_spec(BASE).strategy == "grid" and parse_spec(BASE).adaptive is None
    adaptive = parse_spec(BASE | {"strategy": "adaptive"}).adaptive
    assert adaptive.objectives == ["wer", "rtf", "model_size_bytes"] and adaptive.confidence == 0.95
    for bad, problem in [
        ({"adaptive": {"confidence": 0.9}}, "adaptive: race settings need `strategy: adaptive`"),
        ({"strategy": "adaptive", "adaptive": {"objectives": ["wer", "speed"]}}, "adaptive.objectives[1]: 'speed'"),
        ({"strategy": "adaptive", "adaptive": {"objectives": ["wer", "wer"]}}, "each objective once"),
        ({"strategy": "adaptive", "adaptive": {"first_rung": 3}}, "adaptive.first_rung"),
        ({"strategy": "race"}, "strategy: 'race' is not supported"),
    ]:
        with pytest.raises(SpecError) as error:
            parse_spec(BASE | bad)
        assert any(problem in p for p in error.value.problems), error.value.problems


def _utterance(utt_id: str, errors: int, words: int, seconds: float, rung: int) -> dict:
    return {"utt_id": utt_id, "error": None, "substitutions": errors, "deletions": 0, "insertions": 0,
            "ref_words": words, "ref_chars": 5 * words, "char_errors": errors, "duration_s": 2.0,
            "seconds": seconds, "rung": rung}


def test_rungs_merge_into_one_row_over_every_utterance_scored() -> None:
    from sweep.racing import merge_rung

    first = [_utterance("a", 1, 10, 0.2, 1), _utterance("b", 0, 10, 0.4, 1)]
    second = [_utterance("c", 3, 20, 0.6, 2)]
    rung1 = {"compute_s": 10.0, "timed_s": 0.6, "drift_s": None, "audio_seconds": 4.0, "rtf": 0.15, "rtf_best": 0.15,
             "quantize_s": 5.0, "quantized_reused": False, "batch_size": 1, "decode_s": 0.5, "log": "",
             "timing_exclusive": True, "race_dataset_audio_s": 20.0, "started_at": "t1", "load_s": 2.0}
    rung2 = rung1 | {"compute_s": 1.0, "timed_s": 0.6, "audio_seconds": 2.0, "rtf": 0.3, "rtf_best": 0.3,
                     "quantized_reused": True, "quantize_s": 5.0, "decode_s": 0.4, "log": "a warning",
                     "started_at": "t2"}
    row = merge_rung(merge_rung(None, rung1, first, 1), rung2, first + second, 2)
    assert row["wer"] == pytest.approx(4 / 40) and row["n_utterances"] == 3 and row["word_errors"] == 4
    assert row["rtf"] == pytest.approx((0.15 * 4 + 0.3 * 2) / 6)  # total compute seconds / total audio
    assert row["compute_s"] == 11.0 and row["decode_s"] == pytest.approx(0.9) and row["race_rung"] == 2
    assert row["quantize_s"] == 5.0 and row["race_requantized"] == 0 and row["started_at"] == "t1"
    assert row["latency_p50_s"] == pytest.approx(0.4) and row["rtf_cv"] is None
    assert row["log"] == "[rung 2] a warning"
    # the grid estimate: the first rung's one-off seconds + timed seconds per scored audio second x all the audio
    assert row["race_setup_s"] == pytest.approx(10.0 - 0.6)
    assert row["grid_estimate_s"] == pytest.approx(9.4 + 1.2 * 20.0 / 6.0)
