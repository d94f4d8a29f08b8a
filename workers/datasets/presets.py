"""Dataset presets room: the test sets users evaluate on, by name, with the hub ids and columns their leaderboards use."""
from __future__ import annotations

from typing import Any

# The Open ASR Leaderboard reads every test set from one sorted, test-only copy of the ESB datasets
# (huggingface/open_asr_leaderboard, `--dataset_path hf-audio/esb-datasets-test-only-sorted`), column `text`,
# and scores with Whisper's English normaliser (its normalizer/ is a copy of it): `whisper-english` here.
OPEN_ASR = "hf-audio/esb-datasets-test-only-sorted"
OPEN_ASR_SETS = {
    "ami": "test", "earnings22": "test", "gigaspeech": "test", "librispeech-clean": "test.clean",
    "librispeech-other": "test.other", "spgispeech": "test", "tedlium": "test", "voxpopuli": "test",
}
LEADERBOARD_NORMALIZER = "whisper-english"


def _open_asr(key: str, split: str) -> dict[str, Any]:
    return {"source": "hf", "path": OPEN_ASR, "subset": key.split("-")[0], "split": split,
            "text_column": "text", "audio_column": "audio", "normalizer": LEADERBOARD_NORMALIZER}


PRESETS: dict[str, dict[str, Any]] = {
    # LibriSpeech as OpenSLR publishes it on the hub (seed 001's test-clean and test-other).
    "librispeech-test-clean": {"source": "hf", "path": "openslr/librispeech_asr", "subset": "clean", "split": "test",
                               "text_column": "text", "audio_column": "audio", "normalizer": LEADERBOARD_NORMALIZER},
    "librispeech-test-other": {"source": "hf", "path": "openslr/librispeech_asr", "subset": "other", "split": "test",
                               "text_column": "text", "audio_column": "audio", "normalizer": LEADERBOARD_NORMALIZER},
    **{f"open-asr-{key}": _open_asr(key, split) for key, split in OPEN_ASR_SETS.items()},
    # (issue 14) espeak-ng reading public-domain sentences with sox noise, built by `make synthetic-speech`
    "synthetic-speech-espeak": {"source": "synthetic"},
}


def preset_fields(name: str) -> dict[str, Any]:
    """The dataset fields a preset stands for (a copy: the spec's own fields override them)."""
    if name not in PRESETS:
        raise ValueError(f"preset: {name!r} is not a dataset preset ({', '.join(PRESETS)})")
    return dict(PRESETS[name])
