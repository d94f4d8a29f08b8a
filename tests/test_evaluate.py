"""Evaluation on real tiny.en and real speech: transcripts equal transformers' own generate, long-form, scoring."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from workers.datasets import DatasetConfig, Utterance, load_utterances
from workers.evaluate import EvalConfig, evaluate, run_pass, serialized_bytes
from workers.models import ModelConfig
from workers.models.whisper import WhisperTranscriber
from workers.scoring import score
from workers.trial import WorkerCache

TINY = ModelConfig(name="whisper-tiny.en", packaged="whisper-tiny.en")


@pytest.fixture(scope="module")
def cache() -> WorkerCache:
    return WorkerCache()


@pytest.fixture(scope="module")
def samples(cache: WorkerCache) -> list[Utterance]:
    return cache.utterances(DatasetConfig(name="samples", source="samples"))


def transcriber(cache: WorkerCache, **eval_fields: object) -> WhisperTranscriber:
    loaded, _ = cache.model(TINY)
    return WhisperTranscriber(loaded.model, loaded.processor, "cpu", EvalConfig(**eval_fields), "en")


def test_fp32_transcripts_are_exactly_plain_generate(cache: WorkerCache, samples: list[Utterance]) -> None:
    loaded, _ = cache.model(TINY)
    ours = run_pass(transcriber(cache), samples, batch_size=1).texts
    for u in samples:
        features = loaded.processor(u.audio, sampling_rate=16_000, return_tensors="pt").input_features
        with torch.no_grad():
            ids = loaded.model.generate(features)
        plain = loaded.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
        assert ours[u.utt_id] == plain, u.utt_id


def test_fp32_corpus_wer_on_samples(cache: WorkerCache, samples: list[Utterance]) -> None:
    evaluation = evaluate(transcriber(cache), samples, EvalConfig(warmup_utterances=0))
    columns = evaluation.columns
    # Measured: tiny.en fp32 greedy on the 14 clips; the bound is one word either way.
    assert columns["ref_words"] == pytest.approx(107, abs=3)
    assert columns["word_errors"] == pytest.approx(round(columns["wer"] * columns["ref_words"]))
    assert 0.03 < columns["wer"] < 0.12
    assert columns["n_utterances"] == 14 and columns["n_utterance_errors"] == 0
    assert columns["features_s"] > 0 and columns["encode_s"] > 0 and columns["decode_s"] > 0
    assert sum(r["seconds"] for r in evaluation.utterance_rows) == pytest.approx(
        columns["features_s"] + columns["encode_s"] + columns["decode_s"], rel=1e-6)


def test_larger_batch_is_measured_not_hidden(cache: WorkerCache, samples: list[Utterance]) -> None:
    clips = samples[:6]
    evaluation = evaluate(transcriber(cache, batch_size=4), clips, EvalConfig(batch_size=4, warmup_utterances=0))
    assert evaluation.columns["batch_size"] == 4
    batched = {r["utt_id"]: r["hypothesis"] for r in evaluation.utterance_rows}
    alone = run_pass(transcriber(cache), clips, batch_size=1).texts
    assert evaluation.columns["batch_changed_transcripts"] == sum(batched[u.utt_id] != alone[u.utt_id] for u in clips)


def test_long_form_audio_is_transcribed_whole(cache: WorkerCache, samples: list[Utterance], tmp_path) -> None:
    clips = [u for u in samples if u.utt_id.startswith(("librivox/", "cards/"))]
    audio = np.concatenate([np.concatenate([u.audio, np.zeros(8000, np.float32)]) for u in clips])
    assert len(audio) / 16_000 > 30
    sf.write(tmp_path / "joined.wav", audio, 16_000)
    (tmp_path / "joined.txt").write_text(" ".join(u.reference for u in clips))
    [joined] = load_utterances(DatasetConfig(name="long", source="folder", path=str(tmp_path)))
    assert joined.duration_s > 30
    text = run_pass(transcriber(cache), [joined], 1).texts[joined.utt_id]
    s = score(joined.reference, text, "whisper-english")
    assert s.ref_words > 60
    # Truncation to 30 s would delete the last clip's words wholesale.
    assert (s.substitutions + s.deletions + s.insertions) / s.ref_words < 0.2, text


def test_corrupt_audio_is_one_error_row(cache: WorkerCache, samples: list[Utterance], tmp_path) -> None:
    good = samples[0]
    sf.write(tmp_path / "good.wav", good.audio, 16_000)
    (tmp_path / "good.txt").write_text(good.reference)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    (tmp_path / "broken.txt").write_text("whatever")
    utterances = load_utterances(DatasetConfig(name="mixed", source="folder", path=str(tmp_path)))
    evaluation = evaluate(transcriber(cache), utterances, EvalConfig(warmup_utterances=0))
    rows = {r["utt_id"]: r for r in evaluation.utterance_rows}
    assert rows["broken"]["error"] and "broken.wav" in rows["broken"]["error"]
    assert rows["good"]["error"] is None and rows["good"]["hypothesis"]
    assert evaluation.columns["n_utterance_errors"] == 1 and evaluation.columns["n_utterances"] == 2


def test_serialized_size_counts_every_byte(cache: WorkerCache) -> None:
    loaded, _ = cache.model(TINY)
    # torch.save stores a shared storage once: the tied embedding/proj_out counts once, like parameters().
    values = sum(p.numel() for p in loaded.model.parameters()) + sum(b.numel() for b in loaded.model.buffers())
    assert 4 * values < serialized_bytes(loaded.model) < 4 * values * 1.01
