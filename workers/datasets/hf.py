"""Dataset sources `hf` (datasets.load_dataset: a hub id or a folder in the hub's layout) and `hf_disk`
(a dataset written by save_to_disk)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from workers.datasets.base import (AudioUnavailable, DatasetError, ListedUtterance, existing_path, read_audio_bytes,
                                   read_audio_file)
from workers.datasets.config import HF_ID_COLUMNS, DatasetConfig


def hf_disk_utterances(config: DatasetConfig) -> list[ListedUtterance]:
    rows = hf_split(config, existing_path(config))
    for column in (config.text_column, config.audio_column):
        if column not in rows.column_names:
            raise DatasetError(
                f"dataset {config.name!r}: no column {column!r} in {config.path}; columns: {rows.column_names}"
            )
    rows = undecoded_audio(rows, config.audio_column)
    utt_ids = hf_utt_ids(rows, config.split or "row")
    references = [" ".join(str(text).split()) for text in rows[config.text_column]]
    listed = [
        hf_listed(rows, config.audio_column, index, utt_id, reference, origin=f"{config.path} row {index}")
        for index, (utt_id, reference) in enumerate(zip(utt_ids, references))
    ]
    if not listed:
        raise DatasetError(f"dataset {config.name!r}: {config.path} holds no rows")
    return listed


def hf_utt_ids(rows: Any, prefix: str) -> list[str]:
    id_column = next((column for column in HF_ID_COLUMNS if column in rows.column_names), None)
    if id_column is None:
        return [f"{prefix}-{index:06d}" for index in range(len(rows))]
    return [str(value) for value in rows[id_column]]


def hf_split(config: DatasetConfig, path: Path) -> Any:
    try:
        import datasets  # optional: only this source needs it
    except ImportError as error:
        raise DatasetError(f"dataset {config.name!r}: source 'hf_disk' needs `pip install datasets`") from error
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as error:
        raise DatasetError(f"dataset {config.name!r}: {path} is not a saved Hugging Face dataset: {error}") from error
    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    if config.split not in loaded:
        raise DatasetError(f"dataset {config.name!r}: {path} holds splits {sorted(loaded)}; set `split` to one of them")
    return loaded[config.split]


def undecoded_audio(rows: Any, audio_column: str) -> Any:
    """Keep Audio columns as bytes/path so soundfile decodes them, not torchcodec (often absent)."""
    import datasets

    feature = rows.features[audio_column]
    if isinstance(feature, datasets.Audio) and feature.decode:
        return rows.cast_column(audio_column, datasets.Audio(decode=False))
    return rows


def hf_listed(rows: Any, audio_column: str, index: int, utt_id: str, reference: str, origin: str) -> ListedUtterance:
    return ListedUtterance(utt_id, reference, origin, lambda: hf_waveform(rows[index][audio_column], origin))


def hf_waveform(value: Any, origin: str) -> tuple[np.ndarray, int]:
    if isinstance(value, str):
        return read_audio_file(Path(value))
    if isinstance(value, dict):
        if value.get("array") is not None and value.get("sampling_rate"):
            return np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
        if value.get("bytes"):
            return read_audio_bytes(value["bytes"], origin)
        if value.get("path"):
            return read_audio_file(Path(value["path"]))
    raise AudioUnavailable(
        f"no audio in {origin}: expected a path or a dict with 'array' and 'sampling_rate', 'bytes' or 'path'"
    )


def hf_utterances(config: DatasetConfig) -> list[ListedUtterance]:
    """`datasets.load_dataset` by hub id or local folder; a streamed split is read only as far as it is used."""
    rows = hf_loaded(config)
    columns = hf_column_names(rows)
    for field, column in (("text_column", config.text_column), ("audio_column", config.audio_column)):
        if column not in columns:
            raise DatasetError(f"dataset {config.name!r}: {field}: no column {column!r} in {hf_where(config)}; "
                               f"columns: {columns}")
    rows = undecoded_audio(rows, config.audio_column)
    if not config.streaming:
        utt_ids = hf_utt_ids(rows, config.split)
        references = [" ".join(str(text).split()) for text in rows[config.text_column]]
        listed = [hf_listed(rows, config.audio_column, index, utt_id, reference,
                            origin=f"{hf_where(config)} row {index}")
                  for index, (utt_id, reference) in enumerate(zip(utt_ids, references))]
    else:
        streamed = rows if config.max_utterances is None else rows.take(config.max_utterances)
        listed = [hf_streamed(config, index, row) for index, row in enumerate(streamed)]
    if not listed:
        raise DatasetError(f"dataset {config.name!r}: {hf_where(config)} holds no rows")
    return listed


def hf_where(config: DatasetConfig) -> str:
    subset = f", subset {config.subset!r}" if config.subset else ""
    return f"{config.path}{subset}, split {config.split!r}"


def hf_loaded(config: DatasetConfig) -> Any:
    import datasets

    local = Path(config.path).expanduser().is_dir()
    try:
        return datasets.load_dataset(config.path, config.subset, split=config.split, streaming=config.streaming,
                                     revision=config.revision)
    except ValueError as error:
        message = str(error)
        if "Unknown split" in message or "Bad split" in message:
            raise DatasetError(f"dataset {config.name!r}: split: {config.split!r} is not a split of {config.path}; "
                               f"splits: {hf_split_names(config)}") from None
        if "BuilderConfig" in message or "Config name is missing" in message:
            raise DatasetError(f"dataset {config.name!r}: subset: {message}") from None
        raise
    except (ConnectionError, FileNotFoundError) as error:
        if local:
            raise DatasetError(f"dataset {config.name!r}: {config.path} cannot be read: {error}") from None
        # datasets says OfflineModeIsEnabled / unreachable in many words; one line says what it means.
        raise DatasetError(f"dataset {config.name!r}: path: hub dataset {config.path!r} is unreachable "
                           f"(no network or HF_HUB_OFFLINE=1) and not in the local cache ({error})") from None


def check_reachable(config: DatasetConfig) -> None:
    """On the driver, before a run writes anything: a hub dataset that cannot be resolved is one clear error."""
    if config.source != "hf" or Path(config.path).expanduser().is_dir():
        return
    import datasets

    try:
        datasets.load_dataset_builder(config.path, config.subset, revision=config.revision)
    except (ConnectionError, FileNotFoundError) as error:
        raise DatasetError(f"dataset {config.name!r}: path: hub dataset {config.path!r} is unreachable "
                           f"(no network or HF_HUB_OFFLINE=1) and not in the local cache ({error})") from None


def hf_split_names(config: DatasetConfig) -> list[str]:
    import datasets

    # Streaming resolves the data files per split without downloading them.
    return sorted(datasets.load_dataset(config.path, config.subset, streaming=True, revision=config.revision))


def hf_column_names(rows: Any) -> list[str]:
    if rows.column_names is not None:
        return list(rows.column_names)
    first = next(iter(rows), None)  # a streamed set without declared features: its first row says
    return list(first) if first is not None else []


def hf_streamed(config: DatasetConfig, index: int, row: dict[str, Any]) -> ListedUtterance:
    id_column = next((column for column in HF_ID_COLUMNS if column in row), None)
    utt_id = str(row[id_column]) if id_column else f"{config.split}-{index:06d}"
    origin = f"{hf_where(config)} row {index}"
    value = row[config.audio_column]
    return ListedUtterance(utt_id, " ".join(str(row[config.text_column]).split()), origin,
                           lambda: hf_waveform(value, origin))


SOURCES = {"hf_disk": hf_disk_utterances, "hf": hf_utterances}
