"""Model families on small random checkpoints of the real transformers classes, saved to disk with their
processors: family read from config.json, each family's long-audio rule, and a real sweep through `local:`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import quantsweep, write_spec
from results.queries import connect
from results.store import Store
from results.tables import seed_table
from sweep.plan import expand
from sweep.spec import SpecError, load_spec, parse_spec
from workers.datasets import DatasetConfig, Utterance, load_utterances
from workers.evaluate import EvalConfig, StageTimes
from workers.models import ModelConfig, load_model
from workers.models.ctc import CHUNK_S, CtcTranscriber
from workers.models.families import ModelUnavailable, family_of
from workers.models.moonshine import PIECE_S, pieces
from workers.scoring import normalizer_version

ROOT = Path(__file__).resolve().parents[1]
LETTERS = list("abcdefghijklmnopqrstuvwxyz' ")
CARDS = sorted(Path("/usr/share/pocketsphinx/test/data/cards").glob("*.wav"))


def ctc_processor(directory: Path):
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    # 32 entries: the CTC head's rows divide into HQQ's groups of 64 weights.
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate(LETTERS[:-1])}, "<x>": 30, "<y>": 31}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(directory / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True,
                                         return_attention_mask=True)
    return Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer), len(vocab)


def build_wav2vec2_like(directory: Path, config_class, model_class) -> None:
    processor, vocab_size = ctc_processor(directory)
    torch.manual_seed(0)
    config = config_class(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, conv_dim=(32, 32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4),
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, pad_token_id=0)
    model_class(config).save_pretrained(directory)
    processor.save_pretrained(directory)


def build_parakeet(directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (ParakeetCTCConfig, ParakeetFeatureExtractor, ParakeetForCTC, ParakeetProcessor,
                              ParakeetTokenizer)

    pieces_ = [("<unk>", 0.0)] + [("▁" + c, -1.0) for c in LETTERS[:-1]] + [(c, -2.0) for c in LETTERS[:-1]]
    backend = Tokenizer(models.Unigram(pieces_ + [("<pad>", 0.0)], unk_id=0))
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tokenizer = ParakeetTokenizer(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>")
    extractor = ParakeetFeatureExtractor()
    torch.manual_seed(0)
    config = ParakeetCTCConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, encoder_config={
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "subsampling_conv_channels": 16, "num_mel_bins": extractor.feature_size})
    ParakeetForCTC(config).save_pretrained(directory)
    ParakeetProcessor(extractor, tokenizer).save_pretrained(directory)


def build_moonshine(directory: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (MoonshineConfig, MoonshineForConditionalGeneration, PreTrainedTokenizerFast,
                              Wav2Vec2FeatureExtractor, Wav2Vec2Processor)

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(LETTERS)}, "<x>": 31}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="</s>")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=False,
                                         return_attention_mask=True)
    torch.manual_seed(0)
    config = MoonshineConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, encoder_num_hidden_layers=2,
                             decoder_num_hidden_layers=2, encoder_num_attention_heads=2, decoder_num_attention_heads=2,
                             bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, pad_token_id=2)
    MoonshineForConditionalGeneration(config).save_pretrained(directory)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import HubertConfig, HubertForCTC, Wav2Vec2Config, Wav2Vec2ForCTC

    root = tmp_path_factory.mktemp("checkpoints")
    made = {name: root / name for name in ("wav2vec2", "hubert", "parakeet", "moonshine")}
    for directory in made.values():
        directory.mkdir()
    build_wav2vec2_like(made["wav2vec2"], Wav2Vec2Config, Wav2Vec2ForCTC)
    build_wav2vec2_like(made["hubert"], HubertConfig, HubertForCTC)
    build_parakeet(made["parakeet"])
    build_moonshine(made["moonshine"])
    return made


@pytest.fixture(scope="module")
def long_speech() -> Utterance:
    """Every sample clip joined with 1 s of silence between them: over 30 s, quiet gaps at known places."""
    clips = load_utterances(DatasetConfig(name="samples", source="samples"))
    gap = np.zeros(16_000, np.float32)
    audio = np.concatenate([part for u in clips for part in (u.audio, gap)])
    return Utterance("long", "", audio, len(audio) / 16_000)


def test_family_is_read_from_the_checkpoint_config_and_the_spec_overrides_it(checkpoints: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    found = {name: family_of(ModelConfig(name=name, local=str(path))) for name, path in checkpoints.items()}
    assert found == {"wav2vec2": "ctc", "hubert": "ctc", "parakeet": "ctc", "moonshine": "moonshine"}
    assert family_of(ModelConfig(name="tiny", packaged="whisper-tiny.en")) == "whisper"
    assert family_of(ModelConfig(name="m", local=str(checkpoints["moonshine"]), family="whisper")) == "whisper"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wavlm", "architectures": ["WavLMForCTC"]}))
    with pytest.raises(ModelUnavailable, match=r"model 'wavlm': model_type 'wavlm' .* no known family"):
        family_of(ModelConfig(name="wavlm", local=str(tmp_path)))


def test_hub_model_without_family_offline_is_a_spec_error_naming_it() -> None:
    spec = parse_spec({"sweep": "s", "models": ["nobody/no-such-model"], "quantization": [{"library": "none"}],
                       "datasets": [{"name": "samples", "source": "samples"}]})
    with pytest.raises(SpecError, match=r"models\[0\]\.family: model 'nobody/no-such-model': hub model "
                                        r"'nobody/no-such-model' is unreachable"):
        expand(spec, "x86-cpu")
    with pytest.raises(ModelUnavailable, match="hub model 'nobody/no-such-model' is unreachable"):
        load_model(ModelConfig(name="m", hub="nobody/no-such-model", family="whisper"))


def test_ctc_long_audio_is_chunked_with_context_and_covers_every_frame(checkpoints: dict[str, Path],
                                                                      long_speech: Utterance) -> None:
    loaded = load_model(ModelConfig(name="w", local=str(checkpoints["wav2vec2"])))
    transcriber = CtcTranscriber(loaded.model, loaded.processor, "cpu", EvalConfig(), "en")
    assert long_speech.duration_s > 45 > 1.4 * CHUNK_S
    audio = long_speech.audio[: int(45 * 16_000)]
    chunked = transcriber._chunked_logits(audio, StageTimes())
    [whole] = transcriber._logits([audio], StageTimes())
    assert abs(chunked.shape[0] - whole.shape[0]) <= 2  # no window lost or counted twice
    # The first window spans 0-25 s (20 s kept + 5 s of right context); its first 20 s of frames are kept as they are.
    [first] = transcriber._logits([audio[: 25 * 16_000]], StageTimes())
    kept = round(first.shape[0] * 20 / 25)
    torch.testing.assert_close(chunked[:kept], first[:kept])
    assert not torch.allclose(chunked[kept : kept + 10], first[kept : kept + 10])  # then the next window's
    [text], times = transcriber.transcribe([long_speech.audio])
    assert text and times.encode_s > 0 and times.decode_s > 0


def test_moonshine_cuts_long_audio_in_its_quiet_gaps(long_speech: Utterance) -> None:
    cut = pieces(long_speech.audio)
    assert len(cut) >= 2 and all(len(p) <= PIECE_S * 16_000 for p in cut)
    np.testing.assert_array_equal(np.concatenate(cut), long_speech.audio)
    for piece in cut[:-1]:  # each cut lands in silence, not inside a word
        assert np.abs(piece[-400:]).max() < 1e-3


def test_families_run_a_real_sweep_from_local_checkpoints(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """Three checkpoints (CTC wav2vec2 and Parakeet, Moonshine) x fp32 and two quantizers x two hub-layout
    datasets, through the CLI. (HuBERT's checkpoint is the wav2vec2 layout: its family is read in the test above.)"""
    import datasets

    for split_name, clips in (("clean", CARDS[:2]), ("other", CARDS[2:4])):
        rows = {"audio": [{"bytes": c.read_bytes(), "path": c.name} for c in clips],
                "text": ["a card", "another card"], "id": [c.stem for c in clips]}
        folder = tmp_path / split_name / "data"
        folder.mkdir(parents=True)
        datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio()).to_parquet(
            str(folder / "test-00000-of-00001.parquet"))
    spec = write_spec(tmp_path / "families.yaml", {
        "sweep": "families",
        "models": [{"name": name, "local": str(path)} for name, path in checkpoints.items() if name != "hubert"],
        "quantization": [{"library": "none"}, {"library": "torch", "scheme": "dynamic-int8"},
                         {"library": "hqq", "weight_bits": 4, "group_size": 64}],
        "datasets": [{"name": "librispeech-test-clean", "source": "hf", "path": str(tmp_path / "clean"), "split": "test"},
                     {"name": "librispeech-test-other", "source": "hf", "path": str(tmp_path / "other"), "split": "test",
                      "normalizer": "basic"}],
        "eval": {"warmup_utterances": 0, "max_new_tokens": 4, "threads": 1},
    })
    results = tmp_path / "runs"
    quantsweep("run", str(spec), "--results", str(results), timeout=600)

    con = connect(Store(str(results)))
    rows = con.execute("SELECT model, family, quantization, dataset, status, error, n_utterances, quantized_modules,"
                       " encode_s, decode_s, config FROM trials ORDER BY ALL").fetchall()
    assert len(rows) == 3 * 3 * 2
    assert all(r[4] == "ok" for r in rows), [(r[0], r[2], r[5]) for r in rows if r[4] != "ok"]
    assert {r[0]: r[1] for r in rows} == {"wav2vec2": "ctc", "parakeet": "ctc", "moonshine": "moonshine"}
    assert all(r[6] == 2 and r[8] > 0 and r[9] > 0 for r in rows)
    quantized = {(r[0], r[2]): r[7] for r in rows}
    assert all(quantized[(m, q)] > 0 for m in ("wav2vec2", "parakeet", "moonshine")
               for q in ("torch-dynamic-int8", "hqq-w4-g64"))
    # Default exclusions are the family's: Moonshine keeps its tied proj_out, CTC heads are quantized.
    excludes = {r[0]: json.loads(r[10])["quantization"]["modules"]["exclude"] for r in rows if r[2] == "hqq-w4-g64"}
    assert excludes == {"wav2vec2": [], "parakeet": [], "moonshine": ["proj_out"]}
    assert quantized[("wav2vec2", "hqq-w4-g64")] == 2 * 6 + 2  # 6 Linear per layer, feature projection, lm_head
    normalizers = con.execute("SELECT dataset, list(DISTINCT normalizer) FROM trials GROUP BY ALL ORDER BY ALL").fetchall()
    # The sweep's normaliser, except where a dataset names its own.
    assert [(d, n[0]) for d, n in normalizers] == [
        ("librispeech-test-clean", normalizer_version("whisper-english")), ("librispeech-test-other", "basic")]
    hypotheses = con.execute("SELECT count(*) FILTER (hypothesis IS NOT NULL), count(*) FROM utterances").fetchall()[0]
    assert hypotheses == (3 * 3 * 2 * 2, 3 * 3 * 2 * 2)

    [table] = [t for t in seed_table(con, "families") if t.title.startswith("wav2vec2")]
    first = table.columns.index("wer.librispeech-test-clean")
    assert table.columns[first - 2:first] == ["model", "method"]
    assert table.columns[first:first + 4] == ["wer.librispeech-test-clean", "wer.librispeech-test-other",
                                  "cer.librispeech-test-clean", "cer.librispeech-test-other"]
    assert [r[first - 1] for r in table.rows][0].startswith("Baseline") and len(table.rows) == 3
    assert all(isinstance(r[first], float) and isinstance(r[first + 1], float) for r in table.rows)


def test_seed001_plans_offline_with_its_support_matrix() -> None:
    spec = load_spec(ROOT / "sweeps" / "seed001.yaml")
    plan = expand(spec, "x86-cpu", ["x86-cpu", "cuda"])
    assert {d.name for d in spec.datasets} == {"librispeech-test-clean", "librispeech-test-other"}
    assert {t.model.family for t in plan.trials} == {"whisper"}
    labels = {t.quantization.label() for t in plan.trials}
    assert {"fp32", "torch-dynamic-int8", "quanto-w8", "quanto-w4", "quanto-wf8", "quanto-w8a8", "quanto-w8af8",
            "hqq-w4-g64", "hqq-w3-g64", "bnb-nf4", "bnb-int8"} <= labels
    assert plan.counts_by_class() == {"x86-cpu": 24, "cuda": 22}
    assert sorted((t.hardware, t.quantization.label(), why) for t, why in plan.unsupported) == [
        ("cuda", "torch-dynamic-int8", "torch.ao dynamic int8 has CPU kernels only (device cuda:0)")] * 2
    calibrated = [t for t in plan.trials if t.calibration is not None]
    assert calibrated and {t.calibration.name for t in calibrated} == {"librispeech-dev-clean"}


def test_seed003_plans_offline_with_every_method_on_both_families() -> None:
    spec = load_spec(ROOT / "sweeps" / "seed003.yaml")
    plan = expand(spec, "x86-cpu")
    assert {t.model.family for t in plan.trials} == {"whisper", "moonshine"}
    assert {t.quantization.method for t in plan.trials if t.quantization.library == "ptq"} == {
        "rtn", "gptq", "awq", "smoothquant", "hadamard"}
    assert {d.name for d in spec.datasets} == {f"open-asr-{s}" for s in (
        "ami", "earnings22", "gigaspeech", "librispeech-clean", "librispeech-other", "spgispeech", "tedlium", "voxpopuli")}
    assert len(plan.trials) + len(plan.unsupported) == 5 * 10 * 8
    # calibrated methods calibrate on LibriSpeech train, never on the evaluation sets
    assert {t.calibration.name for t in plan.trials if t.calibration is not None} == {"librispeech-train-clean"}
    done = quantsweep("plan", "sweeps/seed003.yaml", "--format", "csv")
    assert len(done.stdout.strip().splitlines()) == 1 + 5 * 10 * 8
