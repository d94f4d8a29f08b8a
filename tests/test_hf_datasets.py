"""`source: hf` on a dataset in the hub's own layout (parquet shards of real clips), presets, and the errors users see."""
from __future__ import annotations

import io
from pathlib import Path

import datasets
import numpy as np
import pydantic
import pytest
import soundfile as sf
import soxr

from conftest import quantsweep, write_spec
from sweep.spec import parse_spec
from workers.datasets.presets import OPEN_ASR, PRESETS
from workers.datasets import DatasetConfig, DatasetError, load_utterances

CARDS = sorted(Path("/usr/share/pocketsphinx/test/data/cards").glob("*.wav"))
LIBRIVOX = sorted(Path("/usr/share/pocketsphinx/test/data/librivox").glob("*.wav"))


def flac_bytes(audio: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="FLAC")
    return buffer.getvalue()


def shard(path: Path, clips: list[Path], texts: list[str], rate: int = 16_000) -> None:
    """One parquet shard as the hub stores audio datasets: an Audio column of encoded bytes, text, id."""
    audio = [flac_bytes(soxr.resample(sf.read(c, dtype="float32")[0], 16_000, rate), rate) for c in clips]
    rows = {"audio": [{"bytes": b, "path": f"{c.stem}.flac"} for b, c in zip(audio, clips)], "text": texts,
            "id": [c.stem for c in clips]}
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio()).to_parquet(str(path))


@pytest.fixture(scope="module")
def hub_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/test-0000{0,1}-of-00002.parquet (cards at 16 and 8 kHz) and data/train-00000-of-00001.parquet."""
    root = tmp_path_factory.mktemp("hub") / "speech"
    shard(root / "data" / "test-00000-of-00002.parquet", CARDS[:3], ["first card", "second card", "third card"])
    shard(root / "data" / "test-00001-of-00002.parquet", CARDS[3:], ["fourth card", "fifth card"], rate=8_000)
    shard(root / "data" / "train-00000-of-00001.parquet", LIBRIVOX[:1], ["a passage"])
    return root


def hf(root: Path, **fields: object) -> DatasetConfig:
    return DatasetConfig(**({"name": "speech", "source": "hf", "path": str(root), "split": "test"} | fields))


def test_hub_layout_reads_every_shard_of_the_split_decoded_and_resampled(hub_layout: Path) -> None:
    utterances = load_utterances(hf(hub_layout))
    assert [u.utt_id for u in utterances] == [c.stem for c in CARDS]
    assert [u.reference for u in utterances][:2] == ["first card", "second card"]
    for u, clip in zip(utterances, CARDS):
        original = sf.read(clip, dtype="float32")[0]
        assert u.error is None and u.duration_s == pytest.approx(len(original) / 16_000, abs=2e-3)
        if clip in CARDS[:3]:  # 16 kHz FLAC is lossless: the very samples of the clip
            np.testing.assert_allclose(u.audio, original, atol=1 / 32768)
    assert load_utterances(hf(hub_layout, split="train"))[0].reference == "a passage"


def test_streaming_takes_the_first_rows_in_the_dataset_order(hub_layout: Path) -> None:
    streamed = [u.utt_id for u in load_utterances(hf(hub_layout, streaming=True, max_utterances=3))]
    assert streamed == [c.stem for c in CARDS[:3]]  # the rows in shard order, read no further
    assert streamed == [u.utt_id for u in load_utterances(hf(hub_layout, streaming=True, max_utterances=3))]
    # Not streamed, the subset is the hash-spread one every other source uses, from the whole split.
    hashed = [u.utt_id for u in load_utterances(hf(hub_layout, max_utterances=3))]
    assert len(hashed) == 3 and hashed != streamed and set(hashed) < {c.stem for c in CARDS}
    everything = load_utterances(hf(hub_layout, streaming=True))
    assert [u.utt_id for u in everything] == [c.stem for c in CARDS]
    assert everything[4].duration_s == pytest.approx(load_utterances(hf(hub_layout))[4].duration_s)


def test_missing_split_column_or_subset_name_the_field_and_what_exists(hub_layout: Path) -> None:
    with pytest.raises(DatasetError, match=r"split: 'validation' is not a split .* splits: \['test', 'train'\]"):
        load_utterances(hf(hub_layout, split="validation"))
    with pytest.raises(DatasetError, match=r"text_column: no column 'sentence' .* columns: \['audio', 'text', 'id'\]"):
        load_utterances(hf(hub_layout, text_column="sentence"))
    with pytest.raises(DatasetError, match=r"audio_column: no column 'speech'"):
        load_utterances(hf(hub_layout, streaming=True, audio_column="speech"))
    with pytest.raises(DatasetError, match=r"subset: .*'clean' not found"):
        load_utterances(hf(hub_layout, subset="clean"))


def test_presets_carry_the_leaderboard_ids_columns_and_normaliser() -> None:
    clean = DatasetConfig(preset="librispeech-test-clean")
    assert (clean.name, clean.source, clean.path, clean.subset, clean.split) == (
        "librispeech-test-clean", "hf", "openslr/librispeech_asr", "clean", "test")
    ami = DatasetConfig(preset="open-asr-ami", name="ami", max_utterances=50, streaming=True)
    assert (ami.name, ami.path, ami.subset, ami.split, ami.text_column, ami.normalizer) == (
        "ami", OPEN_ASR, "ami", "test", "text", "whisper-english")
    other = DatasetConfig(preset="open-asr-librispeech-other")
    assert (other.subset, other.split) == ("librispeech", "test.other")
    assert {p.removeprefix("open-asr-") for p in PRESETS if p.startswith("open-asr-")} == {
        "ami", "earnings22", "gigaspeech", "librispeech-clean", "librispeech-other", "spgispeech", "tedlium",
        "voxpopuli"}
    spec = parse_spec({"sweep": "s", "models": ["whisper-tiny.en"], "quantization": [{"library": "none"}],
                       "datasets": ["librispeech-test-other", {"preset": "open-asr-tedlium", "max_utterances": 3}]})
    assert [(d.name, d.subset, d.max_utterances) for d in spec.datasets] == [
        ("librispeech-test-other", "other", None), ("open-asr-tedlium", "tedlium", 3)]
    with pytest.raises(pydantic.ValidationError, match="not a dataset preset"):
        DatasetConfig(preset="librispeech-test-dirty")


def test_network_less_hub_dataset_is_one_clear_error_and_nothing_is_written(tmp_path: Path) -> None:
    results = tmp_path / "runs"
    spec = write_spec(tmp_path / "offline.yaml", {"sweep": "offline", "models": ["whisper-tiny.en"],
                                                  "quantization": [{"library": "none"}],
                                                  "datasets": ["librispeech-test-clean"]})
    done = quantsweep("run", str(spec), "--results", str(results), check=False, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    assert "dataset 'librispeech-test-clean': path: hub dataset 'openslr/librispeech_asr' is unreachable" in errors[0]
    assert "Traceback" not in done.stderr
    assert not results.exists()


def test_fields_added_for_hf_stay_out_of_older_dataset_configs_and_their_trial_ids() -> None:
    # Trial ids hash the dumped config: a spec written before `source: hf` existed must keep its ids.
    assert set(DatasetConfig(name="samples", source="samples").model_dump()) == {
        "name", "source", "path", "split", "language", "max_utterances", "text_column", "audio_column"}
    assert {"subset", "streaming", "preset", "normalizer"} <= set(DatasetConfig(preset="open-asr-ami",
                                                                                streaming=True).model_dump())
