"""Dataset source `librispeech`: a LibriSpeech folder tree (<speaker>/<chapter>/*.trans.txt and .flac files)."""
from __future__ import annotations

from pathlib import Path

from workers.datasets.base import DatasetError, ListedUtterance, existing_path, listed_file
from workers.datasets.config import DatasetConfig


def librispeech_utterances(config: DatasetConfig) -> list[ListedUtterance]:
    root = existing_path(config)
    listed = [
        listed_file(utt_id, reference, transcript.parent / f"{utt_id}.flac")
        for transcript in sorted(root.rglob("*.trans.txt"))
        for utt_id, reference in librispeech_lines(transcript)
    ]
    if not listed:
        raise DatasetError(f"dataset {config.name!r}: no LibriSpeech transcripts (*.trans.txt) under {root}")
    return listed


def librispeech_lines(transcript: Path) -> list[tuple[str, str]]:
    lines = transcript.read_text(encoding="utf-8").splitlines()
    pairs = [line.strip().partition(" ") for line in lines if line.strip()]
    return [(utt_id, " ".join(text.split())) for utt_id, _, text in pairs]


SOURCES = {"librispeech": librispeech_utterances}
