"""Dataset source `manifest`: a JSONL file with audio_filepath and text on each line (NeMo's layout)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workers.datasets.base import DatasetError, ListedUtterance, existing_path, listed_file
from workers.datasets.config import DatasetConfig


def manifest_utterances(config: DatasetConfig) -> list[ListedUtterance]:
    manifest = existing_path(config)
    listed = [
        manifest_entry(manifest, number, line)
        for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1)
        if line.strip()
    ]
    if not listed:
        raise DatasetError(f"dataset {config.name!r}: manifest {manifest} lists no utterances")
    return listed


def manifest_entry(manifest: Path, number: int, line: str) -> ListedUtterance:
    where = f"manifest {manifest} line {number}"
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{where}: malformed JSON ({error.msg} at column {error.colno})") from error
    if not isinstance(entry, dict) or not isinstance(entry.get("audio_filepath"), str):
        raise DatasetError(f"{where}: expected an object with a string 'audio_filepath'")
    if not isinstance(entry.get("text"), str):
        raise DatasetError(f"{where}: expected a string 'text'")
    # `duration` may be present (NeMo writes it) but is not trusted: durations are measured.
    audio = manifest.parent / Path(entry["audio_filepath"]).expanduser()
    return listed_file(manifest_utt_id(manifest, audio, entry), " ".join(entry["text"].split()), audio)


def manifest_utt_id(manifest: Path, audio: Path, entry: dict[str, Any]) -> str:
    if "utt_id" in entry:
        return str(entry["utt_id"])
    if audio.is_relative_to(manifest.parent):
        return audio.relative_to(manifest.parent).with_suffix("").as_posix()
    return audio.stem


SOURCES = {"manifest": manifest_utterances}
