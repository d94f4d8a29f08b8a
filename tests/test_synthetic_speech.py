"""The synthetic speech set: built by espeak-ng and sox from public-domain sentences, deterministic, named as such."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from workers.datasets.synthetic import PREFIX, build
from workers.datasets import DatasetConfig, DatasetError, load_utterances


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_set_is_deterministic_exact_and_says_it_is_synthetic(tmp_path: Path) -> None:
    # 20 utterances cover two noise conditions (the conditions change every 18); 4 more are the calibration split
    first, second = build(tmp_path / "a", 20, 4), build(tmp_path / "b", 20, 4)
    assert _digests(first) == _digests(second)
    assert "SYNTHETIC SPEECH" in (first / "README.txt").read_text()
    utterances = load_utterances(DatasetConfig(name="synthetic-speech-espeak", source="synthetic", path=str(first)))
    assert len(utterances) == 20 and all(u.utt_id.startswith(PREFIX + "/") for u in utterances)
    assert all(u.error is None and 1.0 < u.duration_s < 15 for u in utterances)
    noisy = {u.utt_id.split("/")[2] for u in utterances}
    assert noisy == {"clean", "snr25-pinknoise"}
    assert utterances[0].reference[0].isupper() and utterances[0].reference[-1] in ".?!"
    calibration = load_utterances(DatasetConfig(name="synthetic-calibration", source="synthetic", split="calibration",
                                                path=str(first)))
    assert len(calibration) == 4 and all(u.utt_id.startswith(PREFIX + "/") and u.reference for u in calibration)
    assert not {u.reference for u in calibration} & {u.reference for u in utterances}
    assert not {u.utt_id for u in calibration} & {u.utt_id for u in utterances}


def test_unbuilt_set_split_and_unlabelled_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="make synthetic-speech"):
        load_utterances(DatasetConfig(name="synthetic-x", source="synthetic", path=str(tmp_path)))
    # a set built before it had a calibration split says to rebuild it
    built = build(tmp_path / "old", 2, 0)
    with pytest.raises(DatasetError, match="no 'calibration' utterances .*make synthetic-speech"):
        load_utterances(DatasetConfig(name="synthetic-x", source="synthetic", split="calibration", path=str(built)))
    with pytest.raises(ValueError, match="split: source 'synthetic' has splits 'eval' and 'calibration', not 'test'"):
        DatasetConfig(name="synthetic-x", source="synthetic", split="test")
    with pytest.raises(ValueError, match="must say 'synthetic'"):
        DatasetConfig(name="clean-speech", source="synthetic")
