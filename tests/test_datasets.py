"""Dataset room on real speech: pocketsphinx-testdata and pytest-audioeval clips, in every source layout."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import get_args

import numpy as np
import pydantic
import pytest
import soundfile as sf
import soxr

from workers import datasets as ds
from workers.datasets import config as dataset_config, samples as sample_source
from workers.datasets import DatasetConfig, DatasetError, Utterance, load_utterances

POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
LIBRIVOX = sorted((POCKETSPHINX / "librivox").glob("*.wav"))
CARDS = sorted((POCKETSPHINX / "cards").glob("*.wav"))
EXPECTED_EVAL_IDS = {
    *(f"librivox/{clip.stem}" for clip in LIBRIVOX),
    *(f"cards/{clip.stem}" for clip in CARDS),
    "goforward",
    "audioeval-en/counting",
    "audioeval-en/hello_world",
    "audioeval-en/quick_brown_fox",
}


def clip_audio(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    assert rate == 16_000
    return audio


def audio_digest(utterance: Utterance) -> str:
    return hashlib.sha256(utterance.audio.tobytes()).hexdigest()


def config(source: str, path: Path | None = None, **fields: object) -> DatasetConfig:
    return DatasetConfig(name=f"test-{source}", source=source, path=None if path is None else str(path), **fields)


@pytest.fixture(scope="module")
def eval_samples() -> list[Utterance]:
    return load_utterances(config("samples"))


@pytest.fixture(scope="module")
def calibration_samples() -> list[Utterance]:
    return load_utterances(config("samples", split="calibration"))


# ---- built-in samples ------------------------------------------------------------------------------


def test_samples_eval_holds_the_14_referenced_english_clips(eval_samples: list[Utterance]) -> None:
    assert [u.utt_id for u in eval_samples] == sorted(EXPECTED_EVAL_IDS)
    assert len(eval_samples) == 14
    for utterance in eval_samples:
        assert utterance.error is None
        assert utterance.reference.strip()
        assert utterance.audio.dtype == np.float32 and utterance.audio.ndim == 1
        assert utterance.duration_s == pytest.approx(len(utterance.audio) / 16_000)
    by_id = {u.utt_id: u for u in eval_samples}
    assert by_id["goforward"].reference == "go forward ten meters"
    assert by_id["cards/001"].reference == "ten of clubs"  # the file pads it with two spaces
    assert by_id["librivox/sense_and_sensibility_01_austen_64kb-0880"].reference == "he was not an ill disposed young man"
    assert by_id["audioeval-en/hello_world"].reference == "Hello world."  # raw text; normalizing is scoring's job
    # Measured on this machine: 44.184 s of speech, 117 reference words before normalization.
    assert sum(u.duration_s for u in eval_samples) == pytest.approx(44.184, abs=0.01)
    assert sum(len(u.reference.split()) for u in eval_samples) == 117


def test_samples_durations_and_samples_match_the_files(eval_samples: list[Utterance]) -> None:
    by_id = {u.utt_id: u for u in eval_samples}
    for clip in LIBRIVOX + CARDS:
        utterance = by_id[f"{clip.parent.name}/{clip.stem}"]
        assert utterance.duration_s == pytest.approx(sf.info(clip).duration, abs=1e-9)
        np.testing.assert_array_equal(utterance.audio, clip_audio(clip))
    raw_bytes = (POCKETSPHINX / "goforward.raw").stat().st_size
    assert by_id["goforward"].duration_s == pytest.approx(raw_bytes / 2 / 16_000)


def test_calibration_never_shares_audio_with_eval(
    eval_samples: list[Utterance], calibration_samples: list[Utterance]
) -> None:
    assert len(calibration_samples) == 27  # numbers, something, 1 tidigits raw, 24 non-English audioeval clips
    assert {u.utt_id for u in calibration_samples}.isdisjoint(u.utt_id for u in eval_samples)
    assert {audio_digest(u) for u in calibration_samples}.isdisjoint(audio_digest(u) for u in eval_samples)
    assert all(u.error is None and u.duration_s > 0.5 for u in calibration_samples)
    ids = {u.utt_id for u in calibration_samples}
    assert {"numbers", "something", "tidigits/dhd.2934z", "audioeval-fr/comptage"} <= ids
    assert not any(i.startswith("audioeval-en/") for i in ids)


def test_samples_without_pocketsphinx_warn_how_to_add_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sample_source, "POCKETSPHINX_DATA", tmp_path / "not-installed")
    with caplog.at_level(logging.WARNING, logger="workers.datasets"):
        utterances = load_utterances(config("samples"))
    assert [u.utt_id for u in utterances] == sorted(i for i in EXPECTED_EVAL_IDS if i.startswith("audioeval-en/"))
    assert "pocketsphinx-testdata" in caplog.text and "apt-get install pocketsphinx-testdata" in caplog.text


def test_samples_with_neither_package_raise_with_both_instructions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sample_source, "POCKETSPHINX_DATA", tmp_path / "not-installed")
    monkeypatch.setattr(sample_source, "AUDIOEVAL_PACKAGE", "quantsweep_no_such_package")
    with pytest.raises(DatasetError, match="apt-get install pocketsphinx-testdata") as raised:
        load_utterances(config("samples"))
    assert "pip install pytest-audioeval" in str(raised.value)


# ---- librispeech -----------------------------------------------------------------------------------


def test_librispeech_layout_is_read_recursively(tmp_path: Path) -> None:
    root = tmp_path / "LibriSpeech" / "test-clean"
    chapters = {("61", "70968"): LIBRIVOX[:3], ("1089", "134686"): LIBRIVOX[3:]}
    expected = {}
    for (speaker, chapter), clips in chapters.items():
        folder = root / speaker / chapter
        folder.mkdir(parents=True)
        lines = []
        for index, clip in enumerate(clips):
            utt_id = f"{speaker}-{chapter}-{index:04d}"
            sf.write(folder / f"{utt_id}.flac", clip_audio(clip), 16_000, subtype="PCM_16")
            lines.append(f"{utt_id} SPOKEN WORDS OF {clip.stem[-4:]}")
            expected[utt_id] = clip
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    with (root / "61" / "70968" / "61-70968.trans.txt").open("a") as transcript:
        transcript.write("61-70968-0099 A LINE WHOSE FLAC IS MISSING\n")

    utterances = load_utterances(config("librispeech", tmp_path / "LibriSpeech"))

    assert [u.utt_id for u in utterances] == sorted([*expected, "61-70968-0099"])
    missing = utterances[[u.utt_id for u in utterances].index("61-70968-0099")]
    assert missing.audio is None and missing.error.startswith("missing audio file") and "61-70968-0099.flac" in missing.error
    for utterance in utterances:
        if utterance.utt_id in expected:
            clip = expected[utterance.utt_id]
            assert utterance.reference == f"SPOKEN WORDS OF {clip.stem[-4:]}"
            np.testing.assert_array_equal(utterance.audio, clip_audio(clip))  # FLAC of PCM16 is lossless


def test_librispeech_without_transcripts_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=str(tmp_path)):
        load_utterances(config("librispeech", tmp_path))


# ---- manifest --------------------------------------------------------------------------------------


def test_manifest_resolves_relative_paths_against_its_folder(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "card1.flac", clip_audio(CARDS[0]), 16_000, subtype="PCM_16")
    entries = [
        {"audio_filepath": "audio/card1.flac", "text": "ten of clubs", "duration": 1.1},
        {"audio_filepath": str(LIBRIVOX[1]), "text": "he was not an ill disposed young man"},
        {"audio_filepath": "audio/gone.wav", "text": "never recorded"},
    ]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(entry) for entry in entries) + "\n\n")

    by_id = {u.utt_id: u for u in load_utterances(config("manifest", manifest))}

    assert sorted(by_id) == ["audio/card1", "audio/gone", LIBRIVOX[1].stem]
    assert by_id["audio/card1"].duration_s == pytest.approx(sf.info(CARDS[0]).duration)
    assert by_id["audio/card1"].reference == "ten of clubs"
    assert by_id[LIBRIVOX[1].stem].duration_s == pytest.approx(2.99)
    assert by_id["audio/gone"].audio is None
    assert by_id["audio/gone"].error == f"missing audio file {tmp_path / 'audio' / 'gone.wav'}"


def test_manifest_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    manifest = tmp_path / "broken.jsonl"
    good = json.dumps({"audio_filepath": str(CARDS[0]), "text": "ten of clubs"})
    manifest.write_text(f"{good}\n{good}\n{{\"audio_filepath\": \"x.wav\", \"text\": \n")
    with pytest.raises(DatasetError, match=r"broken\.jsonl line 3: malformed JSON"):
        load_utterances(config("manifest", manifest))


def test_missing_dataset_path_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=f"{tmp_path / 'nowhere.jsonl'} does not exist"):
        load_utterances(config("manifest", tmp_path / "nowhere.jsonl"))


# ---- folder ----------------------------------------------------------------------------------------


def write_clip(folder: Path, stem: str, audio: np.ndarray, rate: int, reference: str | None, **options: str) -> None:
    sf.write(folder / f"{stem}.wav", audio, rate, **options)
    if reference is not None:
        (folder / f"{stem}.txt").write_text(reference + "\n")


def test_folder_turns_bad_audio_into_errors_not_exceptions(tmp_path: Path) -> None:
    speech = clip_audio(CARDS[2])
    write_clip(tmp_path, "good", speech, 16_000, "seven of clubs")
    (tmp_path / "sub").mkdir()
    write_clip(tmp_path / "sub", "stereo", np.stack([speech, 0.5 * speech], axis=1), 16_000, "seven of clubs")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really a wave file")
    (tmp_path / "corrupt.txt").write_text("whatever")
    (tmp_path / "zero_bytes.wav").write_bytes(b"")
    (tmp_path / "zero_bytes.txt").write_text("nothing")
    write_clip(tmp_path, "no_frames", np.zeros(0, dtype=np.float32), 16_000, "nothing")
    write_clip(tmp_path, "silent", np.zeros(16_000, dtype=np.float32), 16_000, "nothing")
    write_clip(tmp_path, "unreferenced", speech, 16_000, None)
    (tmp_path / "goforward.raw").write_bytes((POCKETSPHINX / "goforward.raw").read_bytes())
    (tmp_path / "goforward.txt").write_text("go forward ten meters")

    by_id = {u.utt_id: u for u in load_utterances(config("folder", tmp_path))}

    assert sorted(by_id) == [
        "corrupt", "goforward", "good", "no_frames", "silent", "sub/stereo", "unreferenced", "zero_bytes"
    ]
    assert by_id["good"].error is None and by_id["good"].reference == "seven of clubs"
    np.testing.assert_allclose(by_id["sub/stereo"].audio, 0.75 * by_id["good"].audio, atol=1e-4)
    assert by_id["goforward"].duration_s == pytest.approx(2.78625)
    errors = {utt_id: u.error for utt_id, u in by_id.items() if u.error is not None}
    assert all(by_id[utt_id].audio is None for utt_id in errors)
    assert errors["corrupt"].startswith(f"unreadable audio file {tmp_path / 'corrupt.wav'}: ")
    assert errors["zero_bytes"] == f"empty audio file {tmp_path / 'zero_bytes.wav'} (0 bytes)"
    assert errors["no_frames"] == f"empty audio (0 samples) in {tmp_path / 'no_frames.wav'}"
    assert errors["silent"].startswith("silent audio") and str(tmp_path / "silent.wav") in errors["silent"]
    assert errors["unreferenced"] == (
        f"no reference transcript {tmp_path / 'unreferenced.txt'} beside audio file {tmp_path / 'unreferenced.wav'}"
    )
    assert sorted(errors) == ["corrupt", "no_frames", "silent", "unreferenced", "zero_bytes"]


def test_folder_without_audio_raises_naming_it(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no audio here")
    with pytest.raises(DatasetError, match=f"no audio files .* under {tmp_path}"):
        load_utterances(config("folder", tmp_path))


@pytest.mark.parametrize("rate", [8_000, 44_100])
def test_other_sampling_rates_are_resampled_keeping_duration(tmp_path: Path, rate: int) -> None:
    original = clip_audio(LIBRIVOX[4])
    resampled = soxr.resample(original, 16_000, rate)
    write_clip(tmp_path, "clip", resampled, rate, "he might even have been made amiable himself", subtype="FLOAT")

    (utterance,) = load_utterances(config("folder", tmp_path))

    assert utterance.audio.dtype == np.float32
    assert utterance.duration_s == pytest.approx(len(original) / 16_000, abs=1e-3)
    if rate > 16_000:  # a round trip through 44.1 kHz loses nothing a 16 kHz signal holds
        n = min(len(original), len(utterance.audio))
        assert np.corrcoef(original[:n], utterance.audio[:n])[0, 1] > 0.999


def test_long_audio_is_returned_whole(tmp_path: Path) -> None:
    long_speech = np.concatenate([clip_audio(clip) for clip in LIBRIVOX] * 2)  # 49.46 s
    write_clip(tmp_path, "long", long_speech, 16_000, "five passages twice")
    (utterance,) = load_utterances(config("folder", tmp_path))
    assert len(utterance.audio) == len(long_speech)
    assert utterance.duration_s == pytest.approx(49.46, abs=0.01)


# ---- hf_disk ---------------------------------------------------------------------------------------


def test_hf_disk_reads_audio_features_without_torchcodec(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = {"audio": [str(c) for c in CARDS], "text": ["card"] * 5, "id": [f"card-{c.stem}" for c in CARDS]}
    train = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio())
    test = datasets.Dataset.from_dict({"audio": [str(LIBRIVOX[0])], "text": ["one passage"], "id": ["passage"]})
    splits = {"train": train, "test": test.cast_column("audio", datasets.Audio())}
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "saved")

    utterances = load_utterances(config("hf_disk", tmp_path / "saved", split="train"))

    assert [u.utt_id for u in utterances] == [f"card-{c.stem}" for c in CARDS]
    for utterance, clip in zip(utterances, CARDS):
        np.testing.assert_array_equal(utterance.audio, clip_audio(clip))
    with pytest.raises(DatasetError, match=r"splits \['test', 'train'\]"):
        load_utterances(config("hf_disk", tmp_path / "saved"))


def test_hf_disk_reads_arrays_and_paths_in_plain_columns(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    speech_8k = soxr.resample(clip_audio(CARDS[0]), 16_000, 8_000)
    rows = {
        "speech": [{"array": speech_8k.tolist(), "sampling_rate": 8_000}, {"array": [0.0] * 800, "sampling_rate": 8_000}],
        "sentence": ["ten of clubs", "silence"],
    }
    datasets.Dataset.from_dict(rows).save_to_disk(tmp_path / "arrays")
    path_rows = {"audio": [str(LIBRIVOX[1]), str(tmp_path / "gone.wav")], "text": ["a", "b"]}
    datasets.Dataset.from_dict(path_rows).save_to_disk(tmp_path / "paths")

    arrays = load_utterances(config("hf_disk", tmp_path / "arrays", text_column="sentence", audio_column="speech"))
    paths = load_utterances(config("hf_disk", tmp_path / "paths"))

    assert [u.utt_id for u in arrays] == ["row-000000", "row-000001"]
    assert arrays[0].reference == "ten of clubs"
    assert arrays[0].duration_s == pytest.approx(sf.info(CARDS[0]).duration, abs=1e-3)
    assert arrays[1].audio is None and arrays[1].error.startswith("silent audio") and "row 1" in arrays[1].error
    np.testing.assert_array_equal(paths[0].audio, clip_audio(LIBRIVOX[1]))
    assert paths[1].error == f"missing audio file {tmp_path / 'gone.wav'}"


# ---- subsets ---------------------------------------------------------------------------------------


def test_max_utterances_is_a_stable_spread_subset(eval_samples: list[Utterance]) -> None:
    seven = load_utterances(config("samples", max_utterances=7))
    four = load_utterances(config("samples", max_utterances=4))

    ids = [u.utt_id for u in seven]
    assert ids == [u.utt_id for u in load_utterances(config("samples", max_utterances=7))]
    assert ids == sorted(ids) and len(ids) == 7
    assert {u.utt_id for u in four} < set(ids)  # growing N only adds utterances
    assert len({utt_id.split("/")[0] for utt_id in ids}) >= 3  # not just the first folder
    assert ids != [u.utt_id for u in eval_samples][:7]
    assert len(load_utterances(config("samples", max_utterances=100))) == 14


def test_subset_does_not_depend_on_listing_order(tmp_path: Path) -> None:
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        order = CARDS if name == "a" else CARDS[::-1]  # files created in opposite orders
        for clip in order:
            write_clip(folder, clip.stem, clip_audio(clip), 16_000, clip.stem)
    picked = [[u.utt_id for u in load_utterances(config("folder", tmp_path / name, max_utterances=3))] for name in "ab"]
    assert picked[0] == picked[1]


# ---- config ----------------------------------------------------------------------------------------


def test_registry_covers_every_source_name() -> None:
    assert set(ds.SOURCES) == set(get_args(dataset_config.SourceName))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"source": "folder"}, "path: required for source 'folder'"),
        ({"source": "samples", "path": "/data"}, "path: source 'samples' is built in"),
        ({"source": "samples", "split": "test"}, "split: source 'samples' has splits 'eval' and 'calibration'"),
        ({"source": "folder", "path": "/data", "split": "test"}, "split: source 'folder' has no splits"),
        ({"source": "manifest", "path": "/m.jsonl", "text_column": "t"}, "text_column: only sources 'hf_disk' and 'hf'"),
        ({"source": "hf_disk", "path": "/d", "streaming": True}, "streaming: only source 'hf' has it"),
        ({"source": "hf", "path": "org/name"}, "split: required for source 'hf'"),
        ({"preset": "librispeech-test-dirty"}, "preset: 'librispeech-test-dirty' is not a dataset preset"),
        ({"source": "samples", "max_utterances": 0}, "greater than or equal to 1"),
        ({"source": "samples", "shuffle": True}, "Extra inputs are not permitted"),
    ],
)
def test_config_rejects_fields_that_do_not_fit(fields: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        DatasetConfig(name="bad", **fields)


def test_config_schema_describes_every_field() -> None:
    properties = DatasetConfig.model_json_schema()["properties"]
    assert set(properties) == {
        "name", "source", "preset", "path", "split", "subset", "streaming", "language", "max_utterances",
        "text_column", "audio_column", "normalizer", "revision",
    }
    assert all(p.get("description") for p in properties.values())
