"""Dataset source `folder`: audio files, each with a .txt reference beside it."""
from __future__ import annotations

from pathlib import Path

from workers.datasets.base import (AUDIO_SUFFIXES, DatasetError, ListedUtterance, existing_path, listed_file,
                                   listed_without_reference, read_text)
from workers.datasets.config import DatasetConfig


def folder_utterances(config: DatasetConfig) -> list[ListedUtterance]:
    root = existing_path(config)
    audio_files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not audio_files:
        raise DatasetError(f"dataset {config.name!r}: no audio files ({', '.join(AUDIO_SUFFIXES)}) under {root}")
    return [folder_entry(root, audio) for audio in audio_files]


def folder_entry(root: Path, audio: Path) -> ListedUtterance:
    utt_id = audio.relative_to(root).with_suffix("").as_posix()
    reference_path = audio.with_suffix(".txt")
    # Audio without a reference is reported, not skipped, so a sweep never shrinks its set silently.
    if not reference_path.is_file():
        return listed_without_reference(utt_id, audio, reference_path)
    return listed_file(utt_id, read_text(reference_path), audio)


SOURCES = {"folder": folder_utterances}
