"""Deployment backends of issue 15 on real tiny.en weights and real speech: ONNX Runtime (dynamic int8, int4
MatMulNBits), OpenVINO (NNCF int8 and int4 weights) and MLX's CPU build, next to torch fp32 in one sweep through
the real CLI (embedded Ray, real Parquet, real DuckDB); prices give the cost columns.

The float exports are cached per machine (workers/backends/export_cache.py), so only a fresh machine pays them.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import quantsweep, write_spec
from results.queries import connect
from results.store import Store
from sweep.spec import SpecError, parse_spec

UTTERANCES = 4
TINY = "whisper-tiny.en"
BACKENDS = ("ort-dynamic-int8", "ort-w4-g32-acc4", "ov-int8-asym", "ov-int4-sym-g128")
SPEC = {
    "sweep": "backends",
    "models": [{"name": TINY, "packaged": TINY}],
    "quantization": [{"library": "none", "format": "fp32"},
                     {"library": "onnxruntime", "format": "dynamic-int8"},
                     {"library": "onnxruntime", "format": "weight-only", "weight_bits": 4, "group_size": 32},
                     {"library": "openvino", "weight_bits": 8},
                     {"library": "openvino", "weight_bits": 4},
                     # MLX's CPU build computes a 30 s window in tens of seconds here: one clip
                     {"library": "mlx", "weight_bits": 4, "compute_dtype": "fp32"}],
    "datasets": [{"name": "samples", "source": "samples"},
                 {"name": "one", "source": "samples", "max_utterances": 1}],
    "exclude": [{"library": "mlx", "dataset": "samples"}, {"library": "[!m]*", "dataset": "one"}],
    "hardware": ["local"],
    "eval": {"threads": 1, "max_utterances": UTTERANCES, "max_new_tokens": 64, "warmup_utterances": 0},
    "prices": {"x86-cpu": 0.5, "arm-cpu": 0.4},
    "currency": "EUR",
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    root = tmp_path_factory.mktemp("backends")
    spec = write_spec(root / "backends.yaml", SPEC | {"results": str(root / "r")})
    quantsweep("run", str(spec))
    rows = Store(str(root / "r")).read("trials", "backends").to_pylist()
    return root / "r", {r["quantization"]: r for r in rows}


def test_onnxruntime_and_openvino_run_within_5_wer_points_of_torch_fp32(sweep: tuple[Path, dict]) -> None:
    _, rows = sweep
    fp32 = rows["fp32"]
    assert fp32["status"] == "ok", fp32["error"]
    for label in BACKENDS:
        row = rows[label]
        assert row["status"] == "ok", (label, row["error"])
        assert row["runtime"] == row["library"] and row["front_end"] == "transformers"
        assert row["n_utterances"] == UTTERANCES and row["ref_words"] == fp32["ref_words"]
        assert abs(row["wer"] - fp32["wer"]) <= 0.05, (label, row["wer"], fp32["wer"])
        assert row["encode_s"] > 0 and row["decode_s"] > 0 and row["decoded_tokens"] > 0
        assert row["decoder_loop"] == "quantsweep greedy (whisper_graphs)"
        assert row["quantized_params"] > 0 and row["model_size_bytes"] == row["artifact_bytes"]
    assert rows["ort-dynamic-int8"]["runtime_device"] == "CPUExecutionProvider"
    assert rows["ov-int8-asym"]["runtime_device"] == "CPU"
    # int4 weights are smaller on disk than int8 ones, and both than the float model
    assert rows["ort-w4-g32-acc4"]["artifact_bytes"] < rows["ort-dynamic-int8"]["artifact_bytes"] < fp32["model_size_bytes"]
    assert rows["ov-int4-sym-g128"]["artifact_bytes"] < rows["ov-int8-asym"]["artifact_bytes"] < fp32["model_size_bytes"]
    assert rows["ort-w4-g32-acc4"]["weight_bits"] == 4 and rows["ort-w4-g32-acc4"]["group_size"] == 32


def test_float_exports_are_made_once_per_machine(sweep: tuple[Path, dict]) -> None:
    from workers.backends.onnxruntime.export import float_export as onnx_export
    from workers.backends.openvino.export import float_export as openvino_export
    from workers.models import ModelConfig, load_model

    _, rows = sweep
    # the second trial of each backend in the sweep found the first one's export
    assert "float ONNX export reused from" in rows["ort-w4-g32-acc4"]["log"]
    assert "float OpenVINO conversion reused from" in rows["ov-int4-sym-g128"]["log"]
    loaded = load_model(ModelConfig(name=TINY, packaged=TINY))
    for export in (onnx_export, openvino_export):
        path, reused = export(loaded)
        assert reused and any(path.iterdir())


def test_mlx_runs_on_the_cpu_build_and_says_so(sweep: tuple[Path, dict]) -> None:
    results, rows = sweep
    row = rows["mlx-w4-g64-fp32"]
    assert row["status"] == "ok", row["error"]
    assert row["runtime"] == "mlx" and row["decoder_loop"] == "mlx_whisper.decoding.decode"
    assert "mlx-cpu build: not Apple silicon" in row["runtime_device"]
    assert row["weight_bits"] == 4 and row["group_size"] == 64 and 0 < row["artifact_bytes"] < rows["fp32"]["model_size_bytes"]
    utterances = Store(str(results)).read("utterances", "backends").to_pylist()
    mlx = {u["utt_id"]: u for u in utterances if u["run_id"] == row["run_id"]}
    torch_fp32 = {u["utt_id"]: u for u in utterances if u["run_id"] == rows["fp32"]["run_id"]}
    (utt_id, clip), = mlx.items()
    assert clip["hypothesis_normalized"] == torch_fp32[utt_id]["hypothesis_normalized"]


def test_cost_columns_follow_the_prices_of_the_latest_run(sweep: tuple[Path, dict]) -> None:
    results, rows = sweep
    store = Store(str(results))

    def costs() -> dict[str, tuple]:
        con = connect(store)
        return {q: (cost, currency, core_hours, rtf, threads) for q, cost, currency, core_hours, rtf, threads in con.sql(
            "SELECT quantization, cost_per_audio_hour, currency, core_hours_per_audio_hour, rtf, threads "
            "FROM leaderboard").fetchall()}

    priced = costs()
    assert set(priced) >= {"fp32", *BACKENDS}
    for cost, currency, core_hours, rtf, threads in priced.values():
        assert cost == pytest.approx(0.5 * rtf) and currency == "EUR" and core_hours == pytest.approx(threads * rtf)
    chip = rows["fp32"]["hw_chip"]
    store.write_prices("backends", {"x86-cpu": 0.5, f"chip:{chip[2:8].upper()}": 2.0}, None)  # a chip beats its class
    assert all(c[0] == pytest.approx(2.0 * c[3]) and c[1] is None for c in costs().values())
    store.write_prices("backends", {}, None)  # a run of the spec without prices
    assert all(c[0] is None and c[2] is not None for c in costs().values())
    from results.tables import ladder

    steps = [t for t in ladder(connect(store), "backends") if "samples" in t.title][0]
    assert {r[steps.columns.index("runtime")] for r in steps.rows} == {"torch", "onnxruntime", "openvino"}


def test_support_and_knobs_are_decided_before_anything_runs() -> None:
    from workers.backends.mlx.export import MlxExporter
    from workers.backends.onnxruntime.export import OnnxRuntimeExporter
    from workers.backends.openvino.export import OpenVinoExporter
    from workers.backends import LIBRARIES

    for name, exporter in (("onnxruntime", OnnxRuntimeExporter), ("openvino", OpenVinoExporter), ("mlx", MlxExporter)):
        assert LIBRARIES[name] is exporter
        library = exporter(exporter.config_type())
        assert "whisper" in library.supports_family("moonshine") and library.supports_family("whisper") is None
        assert library.missing() is None
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
