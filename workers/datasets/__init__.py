"""Dataset room: audio sources -> utterances (utt_id, 16 kHz audio, reference).

Every module of this package that declares `SOURCES` ({source name: lister}) is a source, found by name.
"""
from __future__ import annotations

import hashlib
import importlib
import pkgutil
from collections import Counter
from collections.abc import Callable

from workers.datasets.base import DatasetError, ListedUtterance, Utterance, load_utterance
from workers.datasets.config import DatasetConfig
from workers.datasets.hf import check_reachable

__all__ = ["DatasetConfig", "DatasetError", "Utterance", "check_reachable", "load_utterances"]

SOURCES: dict[str, Callable[[DatasetConfig], list[ListedUtterance]]] = {}
for _found in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    SOURCES |= getattr(importlib.import_module(f"{__name__}.{_found.name}"), "SOURCES", {})


def load_utterances(config: DatasetConfig) -> list[Utterance]:
    """Every utterance of the dataset (or its `max_utterances` subset), sorted by utt_id.

    Unusable audio becomes an Utterance with `error` set; only an unreadable dataset raises.
    """
    listed = SOURCES[config.source](config)
    require_unique_ids(config, listed)
    chosen = stable_subset(listed, config.max_utterances)
    return [load_utterance(item) for item in sorted(chosen, key=lambda item: item.utt_id)]


def require_unique_ids(config: DatasetConfig, listed: list[ListedUtterance]) -> None:
    repeated = sorted(utt_id for utt_id, count in Counter(item.utt_id for item in listed).items() if count > 1)
    if repeated:
        raise DatasetError(f"dataset {config.name!r}: utt_id listed more than once: {', '.join(repeated[:5])}")


def stable_subset(listed: list[ListedUtterance], limit: int | None) -> list[ListedUtterance]:
    """The first `limit` by a hash of utt_id: independent of listing order, spread over all folders."""
    if limit is None:
        return listed
    return sorted(listed, key=lambda item: hashlib.sha256(item.utt_id.encode()).hexdigest())[:limit]
