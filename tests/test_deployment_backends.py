"""Deployment backends of issue 15: ONNX Runtime (dynamic int8, int4 MatMulNBits) and OpenVINO (NNCF int8 and int4
weights) on real tiny.en weights and real speech, next to torch fp32 in one sweep through the real CLI (embedded
Ray, real Parquet, real DuckDB); MLX's CPU build in the same sweep on the small random Whisper of
tests/plugins/trials.py (real transformers code; tiny.en's 30 s window takes MLX's CPU build about a minute);
prices give the cost columns; a runtime that raises is a `failed` row; a missing package an `unsupported` one.

The float exports are cached per machine (workers/backends/export_cache.py), so only a fresh machine pays them.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import quantsweep, write_spec
from results.queries import connect
from results.store import Store
from sweep.spec import SpecError, parse_spec
from tests.plugins import trials  # noqa: F401 - the `tiny-whisper` family, in this process too

UTTERANCES = 4
TINY = "whisper-tiny.en"
RANDOM = {"name": "tiny-random", "family": "tiny-whisper", "packaged": TINY}
BACKENDS = ("ort-dynamic-int8", "ort-w4-g32-acc4", "ov-int8-asym", "ov-int4-sym-g128")
MLX = "mlx-w4-g64-fp32"
SPEC = {
    "sweep": "backends",
    "models": [{"name": TINY, "packaged": TINY}, RANDOM],
    "quantization": [{"library": "none", "format": "fp32"},
                     {"library": "onnxruntime", "format": "dynamic-int8"},
                     {"library": "onnxruntime", "format": "weight-only", "weight_bits": 4, "group_size": 32},
                     {"library": "openvino", "weight_bits": 8},
                     {"library": "openvino", "weight_bits": 4},
                     {"library": "mlx", "weight_bits": 4, "compute_dtype": "fp32"}],
    # + `long`, a folder written by the fixture
    "datasets": [{"name": "samples", "source": "samples"}, {"name": "two", "source": "samples", "max_utterances": 2}],
    "exclude": [{"model": "tiny-random", "library": "[!m]*"}, {"model": TINY, "library": "mlx"},
                {"model": "tiny-random", "dataset": "samples"}, {"model": TINY, "dataset": "two"},
                # the clip over 30 s goes to ONNX Runtime's dynamic int8 only
                {"dataset": "long", "quantization": "[!o]*"}, {"dataset": "long", "quantization": "ov-*"},
                {"dataset": "long", "quantization": "ort-w*"}],
    "hardware": ["local"],
    "eval": {"threads": 1, "max_utterances": UTTERANCES, "max_new_tokens": 64, "warmup_utterances": 0},
    "prices": {"x86-cpu": 0.5, "arm-cpu": 0.4},
    "currency": "EUR",
}


def long_clip(folder: Path) -> Path:
    """One 16 kHz clip over 30 s of real speech (sample clips end to end) with its reference."""
    import soundfile

    from workers.datasets import DatasetConfig, load_utterances

    audio, words = [], []
    for utterance in load_utterances(DatasetConfig(name="samples", source="samples")):
        audio.append(utterance.audio)
        words.append(utterance.reference)
        if sum(len(a) for a in audio) > 31 * 16_000:
            break
    folder.mkdir()
    soundfile.write(folder / "joined.wav", np.concatenate(audio), 16_000)
    (folder / "joined.txt").write_text(" ".join(words))
    return folder


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[tuple[str, str, str], dict]]:
    root = tmp_path_factory.mktemp("backends")
    datasets = SPEC["datasets"] + [{"name": "long", "source": "folder", "path": str(long_clip(root / "long"))}]
    spec = write_spec(root / "backends.yaml", SPEC | {"results": str(root / "r"), "datasets": datasets})
    quantsweep("run", str(spec))
    rows = Store(str(root / "r")).read("trials", "backends").to_pylist()
    return root / "r", {(r["model"], r["quantization"], r["dataset"]): r for r in rows}


def test_onnxruntime_and_openvino_run_within_5_wer_points_of_torch_fp32(sweep: tuple[Path, dict]) -> None:
    _, rows = sweep
    fp32 = rows[TINY, "fp32", "samples"]
    assert fp32["status"] == "ok", fp32["error"]
    for label in BACKENDS:
        row = rows[TINY, label, "samples"]
        assert row["status"] == "ok", (label, row["error"])
        assert row["runtime"] == row["library"] and row["front_end"] == "transformers"
        assert row["n_utterances"] == UTTERANCES and row["ref_words"] == fp32["ref_words"]
        assert abs(row["wer"] - fp32["wer"]) <= 0.05, (label, row["wer"], fp32["wer"])
        assert row["encode_s"] > 0 and row["decode_s"] > 0 and row["decoded_tokens"] > 0
        assert row["decoder_loop"] == "quantsweep greedy (whisper_graphs)"
        assert row["quantized_params"] > 0 and row["model_size_bytes"] == row["artifact_bytes"]
    assert rows[TINY, "ort-dynamic-int8", "samples"]["runtime_device"] == "CPUExecutionProvider"
    assert rows[TINY, "ov-int8-asym", "samples"]["runtime_device"] == "CPU"
    size = {label: rows[TINY, label, "samples"]["artifact_bytes"] for label in BACKENDS}
    # int4 weights are smaller on disk than int8 ones, and both than the float model
    assert size["ort-w4-g32-acc4"] < size["ort-dynamic-int8"] < fp32["model_size_bytes"]
    assert size["ov-int4-sym-g128"] < size["ov-int8-asym"] < fp32["model_size_bytes"]
    w4 = rows[TINY, "ort-w4-g32-acc4", "samples"]
    assert w4["weight_bits"] == 4 and w4["group_size"] == 32


def test_a_runtime_that_raises_is_a_failed_row_and_the_sweep_goes_on(sweep: tuple[Path, dict]) -> None:
    _, rows = sweep
    row = rows[TINY, "ort-dynamic-int8", "long"]
    assert row["status"] == "failed" and row["error_type"] == "ValueError"
    assert "long-form audio is not supported" in row["error"]
    assert all(r["status"] == "ok" for key, r in rows.items() if key[2] != "long")


def test_float_exports_are_made_once_per_machine(sweep: tuple[Path, dict]) -> None:
    _, rows = sweep
    for first, second, said in (("ort-dynamic-int8", "ort-w4-g32-acc4", "float ONNX export"),
                                ("ov-int8-asym", "ov-int4-sym-g128", "float OpenVINO conversion")):
        # the first trial of a backend wrote the export (or found an earlier run's); the second found the first's
        written = re.search(rf"{said} (?:written to|reused from) (\S+)", rows[TINY, first, "samples"]["log"])
        assert written and f"{said} reused from {written[1]}" in rows[TINY, second, "samples"]["log"]
        assert any(Path(written[1]).iterdir())


def test_mlx_runs_on_the_cpu_build_and_says_so(sweep: tuple[Path, dict]) -> None:
    _, rows = sweep
    row = rows["tiny-random", MLX, "two"]
    assert row["status"] == "ok", row["error"]
    assert row["runtime"] == "mlx" and row["decoder_loop"] == "mlx_whisper.decoding.decode"
    assert "mlx-cpu build: not Apple silicon" in row["runtime_device"]
    assert row["weight_bits"] == 4 and row["group_size"] == 64 and row["n_utterances"] == 2
    assert row["encode_s"] > 0 and row["decoded_tokens"] > 0
    # every Linear and the token embedding in 4 bits: under a third of the float bytes, scales included
    assert 0 < row["artifact_bytes"] < row["baseline_size_bytes"] / 3


def test_mlx_export_computes_what_the_torch_model_computes() -> None:
    """mlx-whisper's model from our conversion (8-bit) against the transformers model it came from: a wrong
    name, a weight in the wrong layout or a dropped bias is far beyond 8-bit rounding."""
    import mlx.core as mx
    import torch
    from mlx_whisper.load_models import load_model as mlx_load

    from workers.backends.base import build_artifact
    from workers.backends.mlx.config import MlxConfig
    from workers.backends.mlx.export import MlxExporter
    from workers.datasets import DatasetConfig, load_utterances
    from workers.models import ModelConfig, load_model

    loaded = load_model(ModelConfig(**RANDOM))
    artifact = build_artifact(MlxExporter(MlxConfig(weight_bits=8, group_size=32, compute_dtype="fp32")), loaded)
    model = mlx_load(str(artifact.path), dtype=mx.float32)
    clip = load_utterances(DatasetConfig(name="one", source="samples", max_utterances=1))[0]
    features = loaded.processor.feature_extractor([clip.audio], sampling_rate=16_000, return_tensors="np").input_features
    tokens = [[50257, 50362, *loaded.processor.tokenizer(clip.reference, add_special_tokens=False).input_ids]]
    with torch.no_grad():
        expected = loaded.model(input_features=torch.from_numpy(features), decoder_input_ids=torch.tensor(tokens))
        encoded = loaded.model.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    audio = model.embed_audio(mx.array(features.transpose(0, 2, 1)))
    logits = model.logits(mx.array(tokens), audio)

    def relative_error(got: mx.array, want: np.ndarray) -> float:
        return float(np.linalg.norm(np.array(got) - want) / np.linalg.norm(want))

    assert relative_error(audio, encoded) < 0.02
    assert relative_error(logits, expected.logits.numpy()) < 0.02


def test_cost_columns_follow_the_prices_of_the_latest_run(sweep: tuple[Path, dict]) -> None:
    results, rows = sweep
    store = Store(str(results))

    def costs() -> dict[str, tuple]:
        con = connect(store)
        return {q: (cost, currency, core_hours, rtf, threads) for q, cost, currency, core_hours, rtf, threads in con.sql(
            "SELECT quantization, cost_per_audio_hour, currency, core_hours_per_audio_hour, rtf, threads "
            f"FROM leaderboard WHERE model = '{TINY}'").fetchall()}

    priced = costs()
    assert set(priced) >= {"fp32", *BACKENDS}
    for cost, currency, core_hours, rtf, threads in priced.values():
        assert cost == pytest.approx(0.5 * rtf) and currency == "EUR" and core_hours == pytest.approx(threads * rtf)
    chip = rows[TINY, "fp32", "samples"]["hw_chip"]
    store.write_prices("backends", {"x86-cpu": 0.5, f"chip:{chip[2:8].upper()}": 2.0}, None)  # a chip beats its class
    assert all(c[0] == pytest.approx(2.0 * c[3]) and c[1] is None for c in costs().values())
    store.write_prices("backends", {}, None)  # a run of the spec without prices
    assert all(c[0] is None and c[2] is not None for c in costs().values())


def test_the_ladder_shows_every_runtimes_profiles_side_by_side(sweep: tuple[Path, dict]) -> None:
    results, _ = sweep
    done = quantsweep("leaderboard", "--results", str(results), "--view", "ladder", "--format", "json")
    steps = [r for r in json.loads(done.stdout) if r["model"] == TINY and r["dataset"] == "samples"]
    assert {r["quantization"] for r in steps} == {"fp32", *BACKENDS}
    assert {r["runtime"] for r in steps} == {"torch", "onnxruntime", "openvino"}
    assert all(r["artifact_bytes"] for r in steps if r["runtime"] != "torch")
    assert all(r["identical_raw_rate"] is not None for r in steps)  # against the torch fp32 transcripts


def test_a_missing_runtime_package_is_an_unsupported_row_with_its_install_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI and its Ray workers run with onnxruntime, nncf and mlx_whisper unimportable: a sitecustomize on
    PYTHONPATH sets their `sys.modules` entries to None, Python's own mark of a module that must not be imported
    (`import` raises ImportError, importlib.util.find_spec answers None), in every process that starts."""
    hidden = ("onnxruntime", "nncf", "mlx_whisper")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import sys\nfor name in {hidden!r}:\n    sys.modules[name] = None\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ["PYTHONPATH"]]))
    for name in hidden:  # the mark holds where the CLI runs
        probe = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True)
        assert probe.returncode != 0 and "None in sys.modules" in probe.stderr
    spec = write_spec(tmp_path / "missing.yaml", {
        "sweep": "missing", "results": str(tmp_path / "r"), "models": [{"name": TINY, "packaged": TINY}],
        "quantization": [{"library": "onnxruntime", "format": "dynamic-int8"}, {"library": "openvino"},
                         {"library": "mlx"}],
        "datasets": [{"name": "samples", "source": "samples", "max_utterances": 1}], "hardware": ["local"]})
    quantsweep("run", str(spec))
    rows = {r["library"]: r for r in Store(str(tmp_path / "r")).read("trials", "missing").to_pylist()}
    assert {library: r["status"] for library, r in rows.items()} == dict.fromkeys(("onnxruntime", "openvino", "mlx"),
                                                                                  "unsupported")
    assert "pip install 'quantsweep[onnxruntime]'" in rows["onnxruntime"]["error"]
    assert "pip install 'quantsweep[openvino]'" in rows["openvino"]["error"]
    assert "'quantsweep[mlx-cpu]'" in rows["mlx"]["error"]


def test_support_per_family_and_class_is_decided_at_plan_time() -> None:
    from sweep.plan import expand
    from workers.backends import LIBRARIES
    from workers.backends.mlx.export import MlxExporter
    from workers.backends.onnxruntime.export import OnnxRuntimeExporter
    from workers.backends.openvino.export import OpenVinoExporter

    for name, exporter in (("onnxruntime", OnnxRuntimeExporter), ("openvino", OpenVinoExporter), ("mlx", MlxExporter)):
        assert LIBRARIES[name] is exporter
        library = exporter(exporter.config_type())
        assert library.supports_family("moonshine") == f"{name} runs whisper models only, not moonshine"
        assert library.supports_family("ctc") and library.supports_family("whisper") is None
        assert library.supports_family("tiny-whisper") is None  # a registered Whisper variant is Whisper
        assert library.missing() is None
    spec = parse_spec({"sweep": "classes", "models": [{"name": TINY, "packaged": TINY}],
                       "quantization": [{"library": "onnxruntime"}, {"library": "openvino"}, {"library": "mlx"}],
                       "datasets": [{"name": "samples", "source": "samples"}],
                       "hardware": ["cuda", "apple", "x86-cpu", "arm-cpu"]})
    plan = expand(spec, "x86-cpu", ["cuda", "apple", "x86-cpu", "arm-cpu"])
    runs = {(t.quantization.library, t.hardware) for t in plan.trials}
    refused = {(t.quantization.library, t.hardware): reason for t, reason in plan.unsupported}
    assert runs == {("onnxruntime", "x86-cpu"), ("onnxruntime", "arm-cpu"), ("openvino", "x86-cpu"),
                    ("openvino", "arm-cpu"), ("mlx", "apple"), ("mlx", "x86-cpu"), ("mlx", "arm-cpu")}
    assert "onnxruntime-gpu" in refused["onnxruntime", "cuda"] and "mps" in refused["onnxruntime", "apple"]
    assert "no CUDA device" in refused["openvino", "cuda"] and "mps" in refused["openvino", "apple"]
    assert "mlx[cuda]" in refused["mlx", "cuda"]


def test_knobs_are_checked_before_anything_runs() -> None:
    bad = SPEC | {"quantization": [{"library": "onnxruntime", "format": "dynamic-int8", "group_size": 64},
                                   {"library": "openvino", "weight_bits": 8, "ratio": 0.5},
                                   {"library": "mlx", "weight_bits": 3}],
                  "prices": {"tpu": 1.0}}
    with pytest.raises(SpecError) as caught:
        parse_spec(bad)
    problems = "\n".join(caught.value.problems)
    assert "quantization[0]: group_size: only with format weight-only" in problems
    assert "quantization[1]: group_size, ratio: only with weight_bits 4" in problems
    assert "quantization[2].weight_bits: 3 is not supported by mlx" in problems
    assert "prices.tpu" in problems and "not a priced hardware" in problems
