"""Dataset room, common part: utterances, reading audio into 16 kHz mono, and what sources share."""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

if TYPE_CHECKING:
    from workers.datasets.config import DatasetConfig

SAMPLE_RATE = 16_000
# Below this peak a clip holds no speech a model could hear (int16 rounding noise is ~3e-5).
SILENCE_PEAK = 1e-4
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".raw")


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


@dataclass(frozen=True)
class ListedUtterance:
    """An utterance a source has found, its audio not read yet (so a subset reads only what it uses)."""

    utt_id: str
    reference: str
    origin: str  # the file (or dataset row) the audio comes from, for error messages
    read_waveform: Callable[[], tuple[np.ndarray, int]]  # samples, sampling rate; raises AudioUnavailable


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


def existing_path(config: DatasetConfig) -> Path:
    path = Path(config.path).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset {config.name!r}: path {path} does not exist (source {config.source!r})")
    return path


def read_text(path: Path) -> str:
    return " ".join(path.read_text(encoding="utf-8").split())


