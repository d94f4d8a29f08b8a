"""Dataset source `samples`: the built-in referenced clips (Debian pocketsphinx-testdata, PyPI pytest-audioeval)."""
from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

from workers.datasets.base import DatasetError, ListedUtterance, listed_file, read_text
from workers.datasets.config import DatasetConfig

log = logging.getLogger(__name__)

POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
AUDIOEVAL_PACKAGE = "pytest_audioeval"
GOFORWARD_REFERENCE = "go forward ten meters"
POCKETSPHINX_HINT = "install it with `apt-get install pocketsphinx-testdata` (as root)"
AUDIOEVAL_HINT = "install it with `pip install pytest-audioeval==0.1.3` (or `pip install 'quantsweep[samples]'`)"


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


SOURCES = {"samples": sample_utterances}
