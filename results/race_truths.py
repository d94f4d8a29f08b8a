"""Race truths room: synthetic groups whose full-dataset front is known, to measure the race's false-stop rate.

Each seed draws a dataset of per-utterance reference words, word errors, compute seconds and model sizes for a
group of trials, in a random order (the race's order is a seeded random permutation). The truth is the front
of the whole dataset's corpus WER, RTF and size; a false stop is a trial of that front that the race stopped.
Errors share each utterance's difficulty (so trials are correlated, as real ones are), and some trials
hallucinate: rarely, an utterance gets dozens of inserted words, a heavy tail that early rungs can miss.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from results.race import Contender, Rules, decide, dominating_pairs, front


@dataclass(frozen=True)
class Made:
    """A made-up quantization: error rate per word, hallucination rate per utterance, relative speed and size."""

    name: str
    error_rate: float
    hallucination: float  # chance per utterance of a run of inserted words (mean 40)
    speed: float  # compute seconds per audio second
    size: float


# Near-ties on purpose: every scenario has trials whose true difference is a fraction of a WER point.
SCENARIOS: dict[str, tuple[Made, ...]] = {
    "ladder-with-near-ties": (
        Made("fp32", 0.080, 0.0, 0.100, 151), Made("int8-a", 0.081, 0.0, 0.070, 101),
        Made("int8-b", 0.083, 0.0, 0.071, 101), Made("int8-c", 0.0815, 0.0, 0.090, 101),
        Made("w4-a", 0.090, 0.0, 0.120, 95), Made("w4-b", 0.092, 0.0, 0.119, 95), Made("w4-c", 0.120, 0.0, 0.118, 95),
        Made("w3-a", 0.140, 0.0, 0.121, 94), Made("w3-b", 0.200, 0.0, 0.122, 94), Made("w3-c", 0.141, 0.0, 0.150, 94),
        Made("w2-a", 0.600, 0.0, 0.130, 93), Made("w2-b", 0.900, 0.0, 0.129, 93),
    ),
    # a trial that is better on most utterances but hallucinates now and then is worse over the whole set
    "hallucinations": (
        Made("steady", 0.100, 0.0, 0.100, 100), Made("loops", 0.085, 0.012, 0.100, 100),
        Made("loops-small", 0.086, 0.012, 0.100, 99), Made("steady-small", 0.101, 0.0, 0.100, 99),
        Made("bad", 0.300, 0.0, 0.100, 100), Made("worse", 0.500, 0.02, 0.100, 100),
    ),
    # only speed and size differ among the accurate ones: ties in WER, small differences in RTF
    "speed-ties": (
        Made("a", 0.10, 0.0, 0.100, 100), Made("b", 0.10, 0.0, 0.104, 100), Made("c", 0.10, 0.0, 0.096, 101),
        Made("d", 0.10, 0.0, 0.085, 102), Made("e", 0.25, 0.0, 0.080, 103), Made("f", 0.30, 0.0, 0.200, 104),
    ),
}


@dataclass(frozen=True)
class Group:
    errors: np.ndarray  # (trials, utterances)
    words: np.ndarray  # (utterances,)
    seconds: np.ndarray  # (trials, utterances)
    sizes: list[float]
    names: list[str]

    def truth(self, objectives: Sequence[str]) -> set[str]:
        points = {name: {"wer": self.errors[t].sum() / self.words.sum(), "rtf": self.seconds[t].sum(),
                         "model_size_bytes": self.sizes[t]} for t, name in enumerate(self.names)}
        return front(points, objectives)


def draw(trials: Sequence[Made], utterances: int, seed: int) -> Group:
    rng = np.random.default_rng(seed)
    words = 4 + rng.poisson(9, utterances)
    difficulty = rng.gamma(2.0, 0.5, utterances)  # shared by every trial: paired differences are small
    noise = rng.gamma(8.0, 1 / 8.0, (len(trials), utterances))
    rates = np.array([t.error_rate for t in trials])[:, None] * difficulty * noise
    errors = rng.binomial(np.repeat(words[None, :], len(trials), 0), np.clip(rates, 0, 0.95)).astype(float)
    loops = rng.random((len(trials), utterances)) < np.array([t.hallucination for t in trials])[:, None]
    errors += loops * rng.poisson(40, (len(trials), utterances))
    audio = words * 0.4
    jitter = rng.lognormal(0, 0.15, (len(trials), utterances))  # per-utterance timing noise
    seconds = np.array([t.speed for t in trials])[:, None] * audio * jitter
    return Group(errors, words.astype(float), seconds, [t.size for t in trials], [t.name for t in trials])


def race(group: Group, ends: Sequence[int], objectives: Sequence[str], confidence: float, rtf_margin: float,
         corrected: bool = True) -> dict[str, int]:
    """Run the race over the group's utterances in their order: stopped trial -> the rung it stopped at.
    `corrected=False` looks at every rung with the uncorrected confidence (what the Bonferroni split fixes)."""
    alive = list(range(len(group.names)))
    pairs = dominating_pairs(group.sizes, objectives)
    stopped: dict[str, int] = {}
    for look, n in enumerate(ends[:-1], start=1):
        rules = Rules(tuple(objectives), confidence, rtf_margin, looks=len(ends) - 1 if corrected else 1,
                      population=ends[-1], pairs=pairs if corrected else 1)
        contenders = [Contender(group.names[t], group.errors[t, :n], group.words[:n], group.seconds[t, :n],
                                group.sizes[t]) for t in alive]
        for stop in decide(contenders, rules):
            stopped[stop.trial_id] = look
        alive = [t for t in alive if group.names[t] not in stopped]
    return stopped


@dataclass(frozen=True)
class FalseStops:
    races: int
    any_false_stop: float  # share of races that stopped at least one trial of the true front (family-wise)
    front_trials_stopped: float  # share of true-front trials stopped, over all races
    compute_share: float  # utterances scored by the race / utterances of the full grid


def false_stops(scenario: str, seeds: int, ends: Sequence[int], objectives: Sequence[str], confidence: float,
                rtf_margin: float, corrected: bool = True) -> FalseStops:
    trials = SCENARIOS[scenario]
    any_false, front_stopped, front_total, scored = 0, 0, 0, 0
    for seed in range(seeds):
        group = draw(trials, ends[-1], seed)
        truth = group.truth(objectives)
        stopped = race(group, ends, objectives, confidence, rtf_margin, corrected)
        wrong = truth & set(stopped)
        any_false += bool(wrong)
        front_stopped += len(wrong)
        front_total += len(truth)
        scored += sum(ends[stopped[name] - 1] if name in stopped else ends[-1] for name in group.names)
    return FalseStops(seeds, any_false / seeds, front_stopped / max(1, front_total),
                      scored / (seeds * len(trials) * ends[-1]))
