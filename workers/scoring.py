"""Scoring room: text normalisers and per-utterance word/char error counts (jiwer), from raw text."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jiwer

Normalizer = Callable[[str], str]


def spelling_mapping_path() -> Path:
    """Whisper's British->American spelling table, fetched at set-up from PyPI's openai-whisper sdist."""
    root = Path(os.environ.get("QUANTSWEEP_CACHE", Path.home() / ".cache" / "quantsweep"))
    return root / "whisper-english-spelling.json"


@cache
def _whisper_english() -> Normalizer:
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    path = spelling_mapping_path()
    mapping = json.loads(path.read_text()) if path.exists() else {}
    return EnglishTextNormalizer(mapping)


@cache
def _basic() -> Normalizer:
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    return BasicTextNormalizer()


NORMALIZERS: dict[str, Callable[[], Normalizer]] = {
    "whisper-english": _whisper_english,
    "basic": _basic,
    "none": lambda: str.strip,
}


def normalizer_version(name: str) -> str:
    """The name recorded on rows: says when Whisper's spelling table was missing, since that can change a score."""
    if name == "whisper-english" and not spelling_mapping_path().exists():
        return "whisper-english-nospelling"
    return name


@dataclass(frozen=True)
class Score:
    substitutions: int
    deletions: int
    insertions: int
    ref_words: int
    ref_chars: int
    char_errors: int


def normalized(text: str, normalizer: str) -> str:
    """The text as scoring sees it: normalised, words joined by single spaces."""
    return " ".join(NORMALIZERS[normalizer]()(text).split())


def score(reference: str, hypothesis: str, normalizer: str) -> Score:
    """Word and character edit counts after normalising both texts the same way."""
    normalize = NORMALIZERS[normalizer]()
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    if not ref:  # jiwer refuses empty references; every hypothesis word is then an insertion
        return Score(0, 0, len(hyp), 0, 0, len(" ".join(hyp)))
    ref_text, hyp_text = " ".join(ref), " ".join(hyp)
    words = jiwer.process_words(ref_text, hyp_text)
    chars = jiwer.process_characters(ref_text, hyp_text)
    return Score(
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
        ref_words=len(ref),
        ref_chars=len(ref_text),
        char_errors=chars.substitutions + chars.deletions + chars.insertions,
    )
