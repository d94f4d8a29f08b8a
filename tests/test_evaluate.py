"""Evaluation on real tiny.en and real speech: transcripts equal transformers' own generate, long-form, scoring."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from workers.datasets import DatasetConfig, Utterance, load_utterances
from workers.evaluate import EvalConfig, StageTimes, batches, evaluate, run_pass, serialized_bytes
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


def test_batches_sort_by_length_or_keep_the_given_order() -> None:
    """Timed passes sort short clips by length, long ones after; calibration keeps the split's order (static
    scales are running averages), a long clip ending the batch before it."""
    clips = [Utterance(name, "", None, seconds) for name, seconds in
             (("a", 3.0), ("long", 45.0), ("b", 1.0), ("c", 2.0), ("d", 0.5), ("e", 4.0))]

    def names(**kwargs: object) -> list[list[str]]:
        return [[u.utt_id for u in batch] for batch in batches(clips, 2, 30.0, **kwargs)]

    assert names() == [["d", "b"], ["c", "a"], ["e"], ["long"]]
    assert names(in_order=True) == [["a"], ["long"], ["b", "c"], ["d", "e"]]
class ScriptedTranscriber:
    """Stage seconds given per timed pass (as a transcriber measures its own): what evaluation makes of repeats."""

    def __init__(self, pass_seconds: list[float], clips: int):
        self.pass_seconds, self.clips, self.calls = pass_seconds, clips, 0

    def transcribe(self, audios: list[np.ndarray]) -> tuple[list[str], StageTimes]:
        timed_pass = self.calls // self.clips
        self.calls += len(audios)
        return [f"pass {timed_pass}"] * len(audios), StageTimes(decode_s=self.pass_seconds[timed_pass] / self.clips)


def test_timing_repeats_take_the_median_the_best_and_the_spread_and_keep_the_first_transcripts(
        samples: list[Utterance]) -> None:
    clips = samples[:2]
    audio_s = sum(u.duration_s for u in clips)
    evaluation = evaluate(ScriptedTranscriber([3.0, 1.0, 1.5], len(clips)), clips,
                          EvalConfig(timing_repeats=3, warmup_utterances=0))
    columns = evaluation.columns
    assert columns["timing_repeats"] == 3
    assert columns["rtf"] == pytest.approx(1.5 / audio_s) and columns["rtf_best"] == pytest.approx(1.0 / audio_s)
    assert columns["rtf_cv"] == pytest.approx(np.std([3.0, 1.0, 1.5]) / np.mean([3.0, 1.0, 1.5]))
    # per-utterance latencies over every pass (1.5, 0.5, 0.75 s each); best: each clip's fastest pass
    assert columns["latency_p50_s"] == pytest.approx(0.75) and columns["latency_best_s"] == pytest.approx(0.5)
    assert columns["latency_cv"] == pytest.approx(np.std([1.5, 0.5, 0.75]) / np.mean([1.5, 0.5, 0.75]))
    assert {r["hypothesis"] for r in evaluation.utterance_rows} == {"pass 0"}
    assert sum(r["seconds"] for r in evaluation.utterance_rows) == pytest.approx(3.0)  # the first pass's seconds
