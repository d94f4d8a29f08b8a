"""Dataset room: audio sources -> utterances (utt_id, 16 kHz audio, reference)."""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import soxr
from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
# Below this peak a clip holds no speech a model could hear (int16 rounding noise is ~3e-5).
SILENCE_PEAK = 1e-4
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".raw")

POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
AUDIOEVAL_PACKAGE = "pytest_audioeval"
GOFORWARD_REFERENCE = "go forward ten meters"
POCKETSPHINX_HINT = "install it with `apt-get install pocketsphinx-testdata` (as root)"
AUDIOEVAL_HINT = "install it with `pip install pytest-audioeval==0.1.3` (or `pip install 'quantsweep[samples]'`)"

SourceName = Literal["samples", "librispeech", "manifest", "folder", "hf_disk", "hf", "synthetic"]
SAMPLE_SPLITS = ("eval", "calibration")
SPLIT_SOURCES = ("samples", "hf_disk", "hf")
HF_SOURCES = ("hf_disk", "hf")
PATH_MEANING = {
    "librispeech": "a folder holding <speaker>/<chapter>/*.trans.txt and .flac files",
    "manifest": "a JSONL file with audio_filepath and text on each line",
    "folder": "a folder of audio files, each with a .txt reference beside it",
    "hf_disk": "a folder written by datasets' save_to_disk",
    "hf": "a Hugging Face hub id ORG/NAME or a local folder in the hub's layout (e.g. parquet shards)",
    "synthetic": "the folder `make synthetic-speech` built (default: the cache's synthetic-speech-espeak)",
}
# hf_disk: the first of these columns that exists names the utterances; else the row number does.
HF_ID_COLUMNS = ("utt_id", "id", "segment_id", "audio_id")


class DatasetError(ValueError):
    """A dataset cannot be read at all (missing path, no audio, malformed listing)."""


class AudioUnavailable(Exception):
    """One utterance's audio cannot be used; the message says why and which file."""


@dataclass
class Utterance:
    utt_id: str
    reference: str
    audio: np.ndarray | None  # float32 mono 16 kHz; None when `error` says why
    duration_s: float
    error: str | None = None


class DatasetConfig(BaseModel):
    """One dataset of a sweep spec: where its audio and references come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Label of this dataset in results and leaderboards.")
    source: SourceName = Field(
        description="Where the audio comes from: 'samples' (built-in referenced clips, no path), "
        "'librispeech' (a LibriSpeech folder tree), 'manifest' (a JSONL file with audio_filepath and "
        "text), 'folder' (audio files with a .txt reference beside each), 'hf_disk' (a Hugging Face "
        "dataset written by save_to_disk), 'hf' (datasets.load_dataset: a hub id or a folder in the hub's layout)."
    )
    # Fields added after the first results: left out of dumps while unset, so trial ids of older specs stay the same.
    preset: str | None = Field(
        None, exclude_if=lambda v: v is None,
        description="A named dataset (librispeech-test-clean, open-asr-ami, ...) whose source, path, subset, "
        "split, columns and normalizer fill every field not given here; see workers/dataset_presets.py."
    )
    path: str | None = Field(
        None, description="File or folder to read; required by every source except 'samples'."
    )
    split: str | None = Field(
        None,
        description="For 'samples': 'eval' (default, 14 English clips with references) or "
        "'calibration' (other clips, never in eval, for static quantization). For 'hf_disk': the "
        "split of a saved DatasetDict; for 'hf' the split load_dataset reads (required). Other sources have no splits.",
    )
    subset: str | None = Field(
        None, exclude_if=lambda v: v is None,
        description="'hf' only: the dataset's configuration (load_dataset's `name`), e.g. 'clean' or 'ami'."
    )
    streaming: bool = Field(
        False, exclude_if=lambda v: v is False,
        description="'hf' only: stream rows instead of downloading the split; with max_utterances the first N "
        "rows in the dataset's own order are read (deterministic, nothing else downloaded)."
    )
    language: str = Field("en", description="Language code of the speech, as told to multilingual models.")
    max_utterances: int | None = Field(
        None,
        ge=1,
        description="Use at most this many utterances: the first N by a stable hash of utt_id, "
        "a subset that is the same on every machine and spread over the whole set (streamed 'hf' sets: "
        "the first N rows in the dataset's order).",
    )
    text_column: str = Field("text", description="'hf_disk'/'hf' only: the column holding the reference transcript.")
    audio_column: str = Field(
        "audio",
        description="'hf_disk'/'hf' only: the column holding the audio (an Audio feature, a dict with "
        "'array' and 'sampling_rate', or a file path).",
    )
    normalizer: Literal["whisper-english", "basic", "none"] | None = Field(
        None, exclude_if=lambda v: v is None,
        description="Text normalisation for this dataset's WER/CER; default eval.normalizer (presets set the "
        "normaliser their leaderboard scores with)."
    )

    @model_validator(mode="before")
    @classmethod
    def fill_from_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is not None:
            from workers.dataset_presets import preset_fields

            return preset_fields(data["preset"]) | {"name": data["preset"]} | data
        return data

    @model_validator(mode="after")
    def check_fields_fit_source(self) -> DatasetConfig:
        if self.source == "samples":
            if self.path is not None:
                raise ValueError("path: source 'samples' is built in and takes no path")
            if self.split not in (None, *SAMPLE_SPLITS):
                raise ValueError(f"split: source 'samples' has splits 'eval' and 'calibration', not {self.split!r}")
        elif self.source == "synthetic":
            if "synthetic" not in self.name:
                raise ValueError(f"name: {self.name!r} must say 'synthetic': source 'synthetic' is synthetic speech")
        elif self.path is None:
            raise ValueError(f"path: required for source {self.source!r} ({PATH_MEANING[self.source]})")
        if self.split is not None and self.source not in SPLIT_SOURCES:
            raise ValueError(f"split: source {self.source!r} has no splits; only 'samples' and 'hf_disk' do")
        hf_columns = sorted({"text_column", "audio_column"} & self.model_fields_set)
        if hf_columns and self.source not in HF_SOURCES:
            raise ValueError(f"{hf_columns[0]}: only sources 'hf_disk' and 'hf' have columns, not {self.source!r}")
        hub_fields = sorted({"subset", "streaming"} & self.model_fields_set)
        if hub_fields and self.source != "hf":
            raise ValueError(f"{hub_fields[0]}: only source 'hf' has it, not {self.source!r}")
        if self.source == "hf" and self.split is None:
            raise ValueError("split: required for source 'hf' (load_dataset reads one split, e.g. 'test')")
        return self


@dataclass(frozen=True)
class ListedUtterance:
    """An utterance a source has found, its audio not read yet (so a subset reads only what it uses)."""

    utt_id: str
    reference: str
    origin: str  # the file (or dataset row) the audio comes from, for error messages
    read_waveform: Callable[[], tuple[np.ndarray, int]]  # samples, sampling rate; raises AudioUnavailable


# ---- reading audio -------------------------------------------------------------------------------


def read_audio_file(path: Path) -> tuple[np.ndarray, int]:
    if not path.is_file():
        raise AudioUnavailable(f"missing audio file {path}")
    if path.stat().st_size == 0:
        raise AudioUnavailable(f"empty audio file {path} (0 bytes)")
    if path.suffix.lower() == ".raw":
        return read_raw_pcm16(path), SAMPLE_RATE
    try:
        return sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, OSError) as error:
        raise AudioUnavailable(f"unreadable audio file {path}: {error}") from error


def read_raw_pcm16(path: Path) -> np.ndarray:
    """Headerless 16 kHz 16-bit little-endian mono, the format of pocketsphinx's test audio."""
    data = path.read_bytes()
    if len(data) % 2:
        raise AudioUnavailable(f"unreadable audio file {path}: odd byte count {len(data)}, not 16-bit PCM")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def read_audio_bytes(data: bytes, origin: str) -> tuple[np.ndarray, int]:
    try:
        return sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except sf.SoundFileError as error:
        raise AudioUnavailable(f"unreadable audio in {origin}: {error}") from error


def to_model_audio(samples: np.ndarray, rate: int, origin: str) -> np.ndarray:
    """Mono float32 at 16 kHz; refuses audio that holds nothing to transcribe."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.size == 0:
        raise AudioUnavailable(f"empty audio (0 samples) in {origin}")
    mono = downmix(samples)
    peak = float(np.max(np.abs(mono)))
    if peak < SILENCE_PEAK:
        raise AudioUnavailable(f"silent audio (peak |x| = {peak:.1e} < {SILENCE_PEAK:.0e}) in {origin}")
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def downmix(samples: np.ndarray) -> np.ndarray:
    if samples.ndim == 1:
        return samples
    # soundfile gives (frames, channels); some array datasets store (channels, frames).
    frames_first = samples if samples.shape[0] >= samples.shape[1] else samples.T
    return frames_first.mean(axis=1)


def load_utterance(listed: ListedUtterance) -> Utterance:
    try:
        audio = to_model_audio(*listed.read_waveform(), origin=listed.origin)
    except AudioUnavailable as unavailable:
        return Utterance(listed.utt_id, listed.reference, None, 0.0, error=str(unavailable))
    return Utterance(listed.utt_id, listed.reference, audio, len(audio) / SAMPLE_RATE)


def listed_file(utt_id: str, reference: str, path: Path) -> ListedUtterance:
    return ListedUtterance(utt_id, reference, str(path), lambda: read_audio_file(path))


def listed_without_reference(utt_id: str, audio: Path, reference_path: Path) -> ListedUtterance:
    def refuse() -> tuple[np.ndarray, int]:
        raise AudioUnavailable(f"no reference transcript {reference_path} beside audio file {audio}")

    return ListedUtterance(utt_id, "", str(audio), refuse)


# ---- sources ---------------------------------------------------------------------------------------


def existing_path(config: DatasetConfig) -> Path:
    path = Path(config.path).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset {config.name!r}: path {path} does not exist (source {config.source!r})")
    return path


def read_text(path: Path) -> str:
    return " ".join(path.read_text(encoding="utf-8").split())


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
        return datasets.load_dataset(config.path, config.subset, split=config.split, streaming=config.streaming)
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
        datasets.load_dataset_builder(config.path, config.subset)
    except (ConnectionError, FileNotFoundError) as error:
        raise DatasetError(f"dataset {config.name!r}: path: hub dataset {config.path!r} is unreachable "
                           f"(no network or HF_HUB_OFFLINE=1) and not in the local cache ({error})") from None


def hf_split_names(config: DatasetConfig) -> list[str]:
    import datasets

    # Streaming resolves the data files per split without downloading them.
    return sorted(datasets.load_dataset(config.path, config.subset, streaming=True))


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


# ---- built-in samples ------------------------------------------------------------------------------


def sample_utterances(config: DatasetConfig) -> list[ListedUtterance]:
    pocketsphinx = POCKETSPHINX_DATA if POCKETSPHINX_DATA.is_dir() else None
    audioeval = audioeval_audio_dir()
    if pocketsphinx is None and audioeval is None:
        raise DatasetError(
            f"source 'samples' has no audio: pocketsphinx-testdata is missing ({POCKETSPHINX_DATA}), "
            f"{POCKETSPHINX_HINT}; pytest-audioeval is missing, {AUDIOEVAL_HINT}"
        )
    if pocketsphinx is None:
        log.warning(
            "samples: pocketsphinx-testdata is missing (%s), so its clips are left out; %s",
            POCKETSPHINX_DATA,
            POCKETSPHINX_HINT,
        )
    if audioeval is None:
        log.warning("samples: pytest-audioeval is missing, so its clips are left out; %s", AUDIOEVAL_HINT)
    calibration = config.split == "calibration"
    listed: list[ListedUtterance] = []
    if pocketsphinx is not None:
        listed += pocketsphinx_calibration(pocketsphinx) if calibration else pocketsphinx_eval(pocketsphinx)
    if audioeval is not None:
        listed += audioeval_clips(audioeval, english=not calibration)
    return listed


def audioeval_audio_dir() -> Path | None:
    # find_spec locates the package without importing it (it is a pytest plugin).
    spec = importlib.util.find_spec(AUDIOEVAL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    audio = Path(next(iter(spec.submodule_search_locations))) / "samples" / "audio"
    return audio if audio.is_dir() else None


def pocketsphinx_eval(data: Path) -> list[ListedUtterance]:
    librivox = [
        listed_file(f"librivox/{file_id}", text, data / "librivox" / f"{file_id}.wav")
        for file_id, text in sphinx_transcription(data / "librivox" / "transcription")
    ]
    cards = [
        listed_file(f"cards/{file_id}", text, data / "cards" / f"{file_id}.wav")
        for file_id, text in sphinx_transcription(data / "cards" / "cards.transcription")
    ]
    goforward = listed_file("goforward", GOFORWARD_REFERENCE, data / "goforward.raw")
    return [*librivox, *cards, goforward]


def pocketsphinx_calibration(data: Path) -> list[ListedUtterance]:
    """Raw clips no eval utterance uses; their references are not shipped, so they are empty."""
    clips = [data / "numbers.raw", data / "something.raw", *sorted((data / "tidigits").glob("*.raw"))]
    return [listed_file(clip.relative_to(data).with_suffix("").as_posix(), "", clip) for clip in clips]


SPHINX_LINE = re.compile(r"^<s>(?P<text>.*?)</s>\s*\((?P<file_id>[^)]+)\)\s*$")


def sphinx_transcription(path: Path) -> list[tuple[str, str]]:
    """Lines `<s> text </s> (file-id)`, as pocketsphinx's test data writes references."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = SPHINX_LINE.match(line.strip())
        if match is None:
            raise DatasetError(f"{path}: line is not `<s> text </s> (file-id)`: {line!r}")
        pairs.append((match["file_id"], " ".join(match["text"].split())))
    return pairs


def audioeval_clips(audio: Path, english: bool) -> list[ListedUtterance]:
    languages = sorted(d for d in audio.iterdir() if d.is_dir() and (d.name == "en") == english)
    return [
        listed_file(f"audioeval-{language.name}/{clip.stem}", audioeval_reference(clip), clip)
        for language in languages
        for clip in sorted(language.glob("*.wav"))
    ]


def audioeval_reference(clip: Path) -> str:
    reference = clip.with_suffix(".txt")
    return read_text(reference) if reference.is_file() else ""


# ---- registry and entry point ----------------------------------------------------------------------

SOURCES: dict[str, Callable[[DatasetConfig], list[ListedUtterance]]] = {
    "samples": sample_utterances,
    "librispeech": librispeech_utterances,
    "manifest": manifest_utterances,
    "folder": folder_utterances,
    "hf_disk": hf_disk_utterances,
    "hf": hf_utterances,
}


def _synthetic(config: DatasetConfig) -> list[ListedUtterance]:
    from workers.dataset_synthetic import synthetic_utterances  # its own room (issue 14)

    return synthetic_utterances(config)


SOURCES["synthetic"] = _synthetic


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
