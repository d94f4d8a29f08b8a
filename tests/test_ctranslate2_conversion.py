"""CTranslate2 -> transformers Whisper conversion, checked against CTranslate2 itself on real speech."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import jiwer
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from workers.models.ct2_checkpoint import (
    MODEL_BIN,
    CorruptModelBin,
    cached_conversion,
    join_parts,
    read_model_bin,
)
from workers.models.packaged import PACKAGED, PackagedFile, packaged_ct2_dir

SAMPLE_RATE = 16_000
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
REFERENCE_CLIP = "sense_and_sensibility_01_austen_64kb-0890"  # "... ill disposed": hyphenated in Whisper's text


@dataclass(frozen=True)
class Clip:
    clip_id: str
    audio: np.ndarray  # mono float32 at 16 kHz


@dataclass(frozen=True)
class Converted:
    """One packaged model: its CTranslate2 dir and the transformers model converted from it."""

    name: str
    ct2_dir: Path
    transformers_dir: Path
    model: WhisperForConditionalGeneration
    processor: WhisperProcessor

    @property
    def is_multilingual(self) -> bool:
        return self.model.generation_config.is_multilingual

    def prompt(self) -> list[int]:
        """start-of-transcript [+ <|en|> <|transcribe|>] + <|notimestamps|>, as the converted tokenizer names them."""
        tokens = ["<|startoftranscript|>"]
        if self.is_multilingual:
            tokens += ["<|en|>", "<|transcribe|>"]
        return self.processor.tokenizer.convert_tokens_to_ids([*tokens, "<|notimestamps|>"])


def read_clip(path: Path) -> Clip:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32)
    return Clip(path.stem, mono)


def audioeval_english_dir() -> Path:
    spec = importlib.util.find_spec("pytest_audioeval")
    assert spec is not None, "pip install pytest-audioeval==0.1.3 (or quantsweep[samples])"
    return Path(next(iter(spec.submodule_search_locations))) / "samples" / "audio" / "en"


def text_ids(ids: list[int], end_of_text: int) -> list[int]:
    """The text tokens of a decoded sequence: prompt, end-of-text and timestamps are all at or above it."""
    return [i for i in ids if i < end_of_text]


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9']+", " ", text.lower()).split())


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "QUANTSWEEP_CACHE" in os.environ:
        return Path(os.environ["QUANTSWEEP_CACHE"])
    return tmp_path_factory.mktemp("quantsweep-cache")


@pytest.fixture(scope="session")
def speech_clips() -> list[Clip]:
    paths = sorted(LIBRIVOX.glob("*.wav")) + sorted(audioeval_english_dir().glob("*.wav"))
    assert len(paths) == 8, f"expected 5 librivox + 3 pytest-audioeval clips, found {paths}"
    return [read_clip(path) for path in paths]


def convert(name: str, cache_root: Path) -> Converted:
    ct2_dir = packaged_ct2_dir(name, cache_root)
    out = cached_conversion(ct2_dir, cache_root, name=name)
    model = WhisperForConditionalGeneration.from_pretrained(out, local_files_only=True).eval()
    return Converted(name, ct2_dir, out, model, WhisperProcessor.from_pretrained(out, local_files_only=True))


@pytest.fixture(scope="session")
def tiny_en(cache_root: Path) -> Converted:
    return convert("whisper-tiny.en", cache_root)


@pytest.fixture(scope="session")
def base(cache_root: Path) -> Converted:
    return convert("whisper-base", cache_root)


def log_mel(converted: Converted, clips: list[Clip]) -> np.ndarray:
    """Log-mel features of every clip, padded to 30 s first as transformers does: shape (clips, mels, 3000)."""
    extracted = converted.processor.feature_extractor(
        [clip.audio for clip in clips], sampling_rate=SAMPLE_RATE, return_tensors="np"
    )
    return np.ascontiguousarray(extracted.input_features, dtype=np.float32)


def ctranslate2_greedy(converted: Converted, features: np.ndarray) -> list[list[int]]:
    whisper = ctranslate2.models.Whisper(
        str(converted.ct2_dir), device="cpu", compute_type="float32", intra_threads=torch.get_num_threads()
    )
    results = whisper.generate(
        ctranslate2.StorageView.from_array(features), [converted.prompt()] * len(features), beam_size=1
    )
    return [result.sequences_ids[0] for result in results]


def transformers_greedy(converted: Converted, features: np.ndarray) -> list[list[int]]:
    language = {"language": "en", "task": "transcribe"} if converted.is_multilingual else {}
    with torch.inference_mode():
        sequences = converted.model.generate(torch.from_numpy(features), num_beams=1, do_sample=False, **language)
    return sequences.tolist()


@pytest.mark.parametrize("fixture_name", ["tiny_en", "base"])
def test_converted_model_decodes_the_same_tokens_as_ctranslate2(
    fixture_name: str, request: pytest.FixtureRequest, speech_clips: list[Clip]
) -> None:
    converted: Converted = request.getfixturevalue(fixture_name)
    model_name = converted.name
    features = log_mel(converted, speech_clips)  # once, shared by both engines
    assert features.shape[1:] == (converted.model.config.num_mel_bins, 3000)
    end_of_text = converted.model.generation_config.eos_token_id

    expected = [text_ids(ids, end_of_text) for ids in ctranslate2_greedy(converted, features)]
    got = [text_ids(ids, end_of_text) for ids in transformers_greedy(converted, features)]

    for clip, ct2_ids, hf_ids in zip(speech_clips, expected, got):
        assert ct2_ids, f"{model_name} / {clip.clip_id}: CTranslate2 decoded nothing"
        assert hf_ids == ct2_ids, (
            f"{model_name} / {clip.clip_id}: transformers "
            f"{converted.processor.tokenizer.decode(hf_ids)!r} != CTranslate2 "
            f"{converted.processor.tokenizer.decode(ct2_ids)!r}"
        )


def test_tiny_en_transcribes_a_librivox_clip_like_its_reference(tiny_en: Converted) -> None:
    clip = read_clip(LIBRIVOX / f"{REFERENCE_CLIP}.wav")
    references = (LIBRIVOX / "transcription").read_text().splitlines()
    reference = next(line for line in references if line.endswith(f"({REFERENCE_CLIP})"))
    reference = reference.removeprefix("<s>").removesuffix(f"({REFERENCE_CLIP})").strip().removesuffix("</s>")

    features = tiny_en.processor(clip.audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    with torch.inference_mode():
        ids = tiny_en.model.generate(features)[0].tolist()
    # Decode with the prompt and end-of-text around the text: skip_special_tokens must drop them all.
    tokenizer = tiny_en.processor.tokenizer
    text = tokenizer.decode(
        tiny_en.prompt() + text_ids(ids, tokenizer.eos_token_id) + [tokenizer.eos_token_id], skip_special_tokens=True
    )

    assert "<|" not in text
    output = jiwer.process_words(words(reference), words(text))
    assert output.substitutions + output.deletions + output.insertions <= 2, (reference, text)


def test_converted_directory_is_complete(tiny_en: Converted, base: Converted) -> None:
    assert tiny_en.model.config.vocab_size == 51864 and not tiny_en.is_multilingual
    assert base.model.config.vocab_size == 51865 and base.is_multilingual
    for converted in (tiny_en, base):
        generation = converted.model.generation_config
        assert len(converted.processor.tokenizer) == converted.model.config.vocab_size  # timestamps included
        assert converted.processor.feature_extractor.feature_size == converted.model.config.num_mel_bins == 80
        assert generation.max_length == 448 and generation.suppress_tokens and generation.alignment_heads
        assert converted.model.proj_out.weight is converted.model.get_input_embeddings().weight  # tied
    assert base.model.generation_config.lang_to_id["<|en|>"] == 50259
    assert base.model.generation_config.task_to_id == {"translate": 50358, "transcribe": 50359}
    assert tiny_en.model.generation_config.no_timestamps_token_id == 50362


def test_cached_conversion_reuses_the_cache(tiny_en: Converted, cache_root: Path) -> None:
    weights_file = tiny_en.transformers_dir / "model.safetensors"
    written_at = weights_file.stat().st_mtime_ns
    started = time.perf_counter()
    again = cached_conversion(tiny_en.ct2_dir, cache_root, name=tiny_en.name)
    assert again == tiny_en.transformers_dir
    assert time.perf_counter() - started < 1.0
    assert weights_file.stat().st_mtime_ns == written_at


def test_truncated_model_bin_names_the_file_and_leaves_no_half_directory(
    tiny_en: Converted, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-ct2"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(tiny_en.ct2_dir / name, broken / name)
    with open(tiny_en.ct2_dir / MODEL_BIN, "rb") as whole:
        (broken / MODEL_BIN).write_bytes(whole.read(1 << 20))
    cache = tmp_path / "cache"

    with pytest.raises(CorruptModelBin, match=re.escape(str(broken / MODEL_BIN))):
        cached_conversion(broken, cache)
    assert list(cache.iterdir()) == []


def test_join_parts_restores_a_model_bin_split_across_directories(tiny_en: Converted, tmp_path: Path) -> None:
    whole = (tiny_en.ct2_dir / MODEL_BIN).read_bytes()
    cuts = [0, 1_000_003, len(whole) // 2, len(whole)]
    parts = []
    for number, (start, end) in enumerate(zip(cuts, cuts[1:]), start=1):
        part = tmp_path / f"dir{number}" / f"{MODEL_BIN}.part{number}"
        part.parent.mkdir()
        part.write_bytes(whole[start:end])
        parts.append(part)

    joined = join_parts(parts, tmp_path / "joined" / MODEL_BIN)

    assert hashlib.sha256(joined.read_bytes()).digest() == hashlib.sha256(whole).digest()
    variables = read_model_bin(joined)
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]  # alias resolved


def test_packaged_names_and_missing_packages_say_what_to_do() -> None:
    with pytest.raises(KeyError, match="whisper-base.*whisper-tiny.en"):
        packaged_ct2_dir("whisper-huge", Path("/nonexistent"))
    missing = PackagedFile("quantsweep_no_such_model_package", "data", "no-such-models==1.0")
    with pytest.raises(ModuleNotFoundError, match=re.escape("pip install no-such-models==1.0")):
        missing.locate("pip install 'quantsweep[samples]'")
    assert set(PACKAGED) == {"whisper-tiny.en", "whisper-base"}
