"""Rungs room: the deterministic, stratified order in which an adaptive race scores a dataset, its rungs, and
the quantized models a worker keeps while their trials race (so a model is not rebuilt for every rung)."""
from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.datasets import Utterance

# A worker keeps the deployables of racing trials up to this many bytes of resident tensors (the rest of a
# race's models are rebuilt when their next rung comes); QUANTSWEEP_RACE_KEEP_BYTES overrides it.
KEEP_SHARE_OF_MEMORY = 0.25


def stratum(utt_id: str) -> str:
    """What an utterance shares with its neighbours: its folder (voice and noise, source) or, for LibriSpeech-
    style ids `speaker-chapter-n`, its speaker and chapter. Utterances of one stratum are correlated."""
    if "/" in utt_id:
        return utt_id.rsplit("/", 1)[0]
    return utt_id.rsplit("-", 1)[0] if "-" in utt_id else ""


def race_order(utt_ids: Sequence[str], seed: int) -> list[str]:
    """A seeded random order in which every prefix holds each stratum in proportion to its size: each stratum's
    members, shuffled, are spread evenly over [0, 1) from a random offset, and the order sorts by position."""
    strata: dict[str, list[str]] = defaultdict(list)
    for utt_id in sorted(utt_ids):
        strata[stratum(utt_id)].append(utt_id)
    rng = np.random.default_rng([seed, len(utt_ids)])
    position: dict[str, tuple[float, str]] = {}
    for name in sorted(strata):
        members = strata[name]
        shuffled, offset = rng.permutation(len(members)), rng.random()
        for rank, index in enumerate(shuffled):
            tie = hashlib.sha256(f"{seed}:{members[index]}".encode()).hexdigest()
            position[members[index]] = ((rank + offset) / len(members), tie)
    return sorted(utt_ids, key=position.__getitem__)


def rung_ends(population: int, first_rung: int, growth: float) -> list[int]:
    """Utterances scored after each rung: first_rung, then growth times the previous, the last the whole set."""
    ends = [min(first_rung, population)]
    while ends[-1] < population:
        ends.append(min(population, max(ends[-1] + 1, math.ceil(ends[-1] * growth))))
    return ends


@dataclass(frozen=True)
class Rung:
    """Rung `index` (1-based) of a race: a trial is scored on this chunk of the race order, and only on it."""

    index: int
    first_rung: int
    growth: float
    seed: int

    def ends(self, population: int) -> list[int]:
        return rung_ends(population, self.first_rung, self.growth)

    def chunk(self, utterances: Sequence[Utterance]) -> list[Utterance]:
        by_id = {u.utt_id: u for u in utterances}
        order = race_order(list(by_id), self.seed)
        ends = self.ends(len(order))
        start = ends[self.index - 2] if self.index > 1 else 0
        return [by_id[utt_id] for utt_id in order[start:ends[self.index - 1]]]


def keep_budget() -> int:
    if "QUANTSWEEP_RACE_KEEP_BYTES" in os.environ:
        return int(os.environ["QUANTSWEEP_RACE_KEEP_BYTES"])
    return int(KEEP_SHARE_OF_MEMORY * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


@dataclass
class Kept:
    """Racing trials' quantized models on this worker, least recently used first, within a byte budget."""

    budget: int = field(default_factory=keep_budget)
    items: OrderedDict[tuple, tuple[Any, int]] = field(default_factory=OrderedDict)  # key -> (model, bytes)

    def get(self, key: tuple) -> Any | None:
        if key not in self.items:
            return None
        self.items.move_to_end(key)
        return self.items[key][0]

    def put(self, key: tuple, value: Any, size: int) -> None:
        """Keep it (a model over the whole budget is not kept); evict the least recently used to fit."""
        self.items.pop(key, None)
        if size > self.budget:
            return
        while self.items and sum(s for _, s in self.items.values()) + size > self.budget:
            self.items.popitem(last=False)
        self.items[key] = (value, size)
