"""Race room: when an adaptive sweep may stop a trial, from paired per-utterance numbers (pure numpy, no Ray).

A group's trials are scored on the same utterances in the same order, rung after rung. At a look (the end of a
rung before the last) trial i is stopped when another live trial j is, at the spec's confidence, at least as
good on every objective and better on one:
- wer: j makes fewer word errors in total. Corpus WER is errors / reference words and both trials have the same
  references, so WER_j < WER_i over the whole dataset exactly when the mean of the paired differences
  e_j(u) - e_i(u) over all its utterances is below 0 (longer utterances weigh more, as in corpus WER).
- rtf: j is faster by more than `rtf_margin`: RTF_j < (1 - margin) RTF_i, i.e. the mean of
  s_j(u) - (1 - margin) s_i(u) over all utterances is below 0 (s: compute seconds; the audio is the same).
  The margin keeps timing drift between the moments two trials' rungs ran from reading as a difference.
- model_size_bytes: deterministic, compared as it is (j no larger; strictly smaller counts as better).
"Below 0 at the confidence" means a one-sided upper bound on that mean is below 0. The utterances seen are a
prefix of a seeded random order, i.e. a sample without replacement from the dataset, so the bound is a
Student-t bound with the finite-population correction (exact once every utterance is seen).

Repeated looks and many pairs: a false stop (a trial of the full dataset's front stopped) needs the bound of
one fixed (pair, objective) to fail at one look (for j not truly dominating i there is an objective where j is
not better, fixed by the truth). A Bonferroni split of alpha = 1 - confidence over the looks and the ordered
pairs the deterministic objectives allow bounds the chance of any false stop in the group by alpha.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MEASURED = ("wer", "rtf")  # per utterance, so bounded with confidence; model size is deterministic


@dataclass(frozen=True)
class Contender:
    """One trial's paired numbers over the utterances scored so far, in the race's order."""

    trial_id: str
    errors: np.ndarray  # word errors per utterance
    words: np.ndarray  # reference words per utterance (the same for every trial of the group)
    seconds: np.ndarray  # compute seconds per utterance
    model_size_bytes: float | None

    @property
    def scored(self) -> int:
        return len(self.errors)


@dataclass(frozen=True)
class Rules:
    """How a group decides: objectives, confidence, RTF margin, and the split of alpha (looks x pairs)."""

    objectives: tuple[str, ...]
    confidence: float
    rtf_margin: float
    looks: int  # rungs after which a trial may stop (every rung but the last)
    population: int  # utterances in the whole dataset
    pairs: int  # ordered pairs (j, i) whose deterministic objectives let j dominate i

    @property
    def alpha(self) -> float:
        """Per (pair, look) one-sided error rate."""
        return (1 - self.confidence) / max(1, self.looks * self.pairs)


@dataclass(frozen=True)
class Stop:
    trial_id: str
    dominated_by: str
    reason: str


def may_dominate(j: float | None, i: float | None) -> bool:
    """Deterministic size: j can dominate i only if it is no larger (an unknown size never dominates)."""
    return j is not None and i is not None and j <= i


def dominating_pairs(sizes: Sequence[float | None], objectives: Sequence[str]) -> int:
    """Ordered pairs that can ever stop a trial: all of them unless model size rules some out."""
    k = len(sizes)
    if "model_size_bytes" not in objectives:
        return k * (k - 1)
    return sum(may_dominate(sizes[a], sizes[b]) for a in range(k) for b in range(k) if a != b)


def t_tail(t: float, df: int) -> float:
    """P(T > t) for Student's t with integer df >= 1, t >= 0: the closed form by theta = atan(t / sqrt(df))
    (Abramowitz and Stegun 26.7.3-4; no scipy here)."""
    theta = math.atan(t / math.sqrt(df))
    c2, term, total = math.cos(theta) ** 2, 1.0, 1.0
    if df % 2:  # odd: 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        for k in range(1, (df - 1) // 2):
            term *= 2 * k / (2 * k + 1) * c2
            total += term
        inside = 2 / math.pi * (theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0))
    else:  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * c2
            total += term
        inside = math.sin(theta) * total
    return (1 - inside) / 2


def t_quantile(p: float, df: int) -> float:
    """The t with P(T <= t) = p (p > 0.5), by bisection on t_tail."""
    low, high = 0.0, 1.0
    while t_tail(high, df) > 1 - p:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if t_tail(middle, df) > 1 - p else (low, middle)
    return high


def upper_bound(diffs: np.ndarray, population: int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) upper bounds on the population means of `diffs` (last axis: utterances), samples
    without replacement of n out of `population` values: mean + t * sd / sqrt(n) * sqrt(1 - n / N)."""
    n = diffs.shape[-1]
    mean = diffs.mean(axis=-1)
    if n >= population:
        return mean  # every utterance seen: the mean is the dataset's own
    if n < 2:
        return np.full(mean.shape, np.inf)
    sd = diffs.std(axis=-1, ddof=1)
    return mean + t_quantile(1 - alpha, n - 1) * sd / math.sqrt(n) * math.sqrt(1 - n / population)


def dominance(contenders: Sequence[Contender], rules: Rules) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """[j, i] = j dominates i at the rules' confidence, and each objective's own matrix (measured ones: the
    upper bound on the mean paired difference, in words or seconds per utterance; below 0 means better)."""
    n = min(c.scored for c in contenders)
    k = len(contenders)
    sizes = np.array([np.nan if c.model_size_bytes is None else c.model_size_bytes for c in contenders], float)
    smaller_or_equal = sizes[:, None] <= sizes[None, :]  # NaN compares False: an unknown size never dominates
    matrices: dict[str, np.ndarray] = {}
    ok = ~np.eye(k, dtype=bool)
    # "better on one": a measured objective is compared strictly; size alone only when strictly smaller
    strict = (np.ones((k, k), bool) if any(o in MEASURED for o in rules.objectives)
              else sizes[:, None] < sizes[None, :])
    for objective in rules.objectives:
        if objective == "model_size_bytes":
            ok &= smaller_or_equal
            continue
        if objective == "wer":
            values = np.stack([c.errors[:n] for c in contenders])
            diffs = values[:, None, :] - values[None, :, :]
        else:
            values = np.stack([c.seconds[:n] for c in contenders])
            diffs = values[:, None, :] - (1 - rules.rtf_margin) * values[None, :, :]
        matrices[objective] = upper_bound(diffs, rules.population, rules.alpha)
        ok &= matrices[objective] < 0
    return ok & strict, matrices


def reason(contenders: Sequence[Contender], matrices: dict[str, np.ndarray], j: int, i: int, rules: Rules) -> str:
    """Why j dominates i, objective by objective, in words."""
    n = min(c.scored for c in contenders)
    words = float(np.sum(contenders[i].words[:n]))
    parts = []
    for objective in rules.objectives:
        if objective == "wer":
            points = matrices["wer"][j, i] * n / max(1.0, words) * 100
            parts.append(f"WER lower (upper bound of the difference {points:+.2f} points)")
        elif objective == "rtf":
            parts.append(f"RTF lower by more than {rules.rtf_margin:.0%}")
        else:
            parts.append("no larger" if contenders[j].model_size_bytes == contenders[i].model_size_bytes
                         else "smaller")
    return "; ".join(parts)


def decide(contenders: Sequence[Contender], rules: Rules) -> list[Stop]:
    """The live trials this look stops, each with the trial that dominates it (the first in `contenders`' order,
    which callers keep deterministic), all judged on the same utterances. Dominance with confidence cannot
    cycle, so every stopped trial has a dominator that is itself either kept or stopped for a reason."""
    if len(contenders) < 2:
        return []
    dominated, matrices = dominance(contenders, rules)
    stops = []
    for i in range(len(contenders)):
        by = np.flatnonzero(dominated[:, i])
        if len(by):
            j = int(by[0])
            stops.append(Stop(contenders[i].trial_id, contenders[j].trial_id,
                              reason(contenders, matrices, j, i, rules)))
    return stops


def front(points: dict[str, dict[str, float]], objectives: Sequence[str]) -> set[str]:
    """Pareto front of point values (lower is better on every objective): members no other point dominates."""
    def dominated(a: dict[str, float], b: dict[str, float]) -> bool:
        return all(b[o] <= a[o] for o in objectives) and any(b[o] < a[o] for o in objectives)

    return {name for name, p in points.items()
            if not any(dominated(p, q) for other, q in points.items() if other != name)}
