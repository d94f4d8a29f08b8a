"""Benchmark: what quantsweep's runtime seam costs. RTF of a trial ÷ RTF of a plain loop over the runtime.

For ggml q8_0 (whisper.cpp, evaluated in an isolated child), CTranslate2 int8, ONNX Runtime dynamic int8, OpenVINO
int8 weights and (case mlx_w4, on one clip: MLX's CPU build is slow) MLX 4-bit on tiny.en: each round runs the
quantsweep trial (its `rtf` column) and then a plain loop that calls the runtime directly, the way its docs show,
on the same artifact, clips and threads: pywhispercpp's Model.transcribe; ctranslate2.models.Whisper.generate on
the feature extractor's features; for ONNX Runtime and OpenVINO, InferenceSession.run / a compiled model's call
over the same two graphs, with a greedy numpy loop that keeps generate's rules as the trial's does (prompt,
suppress_tokens, begin_suppress_tokens, end-of-text or 448 positions), so both decode the same tokens;
mlx_whisper's load_model, embed_audio and decode. Rounds are interleaved so that drift in the machine's speed hits
both. Last line: JSON {"<case>_ratio", ...}: the median over rounds of each round's trial RTF ÷ direct RTF (a pair
run back to back shares the machine's state; 1.0 = no overhead), and the median RTFs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the runtimes set it, before any OpenMP loads

import ctranslate2  # noqa: E402
import numpy as np  # noqa: E402
from pywhispercpp.model import Model  # noqa: E402

import workers.backends  # noqa: E402,F401 - the registry first: it imports every backend
from workers.backends.mlx.config import MlxConfig  # noqa: E402
from workers.backends.onnxruntime.config import OnnxRuntimeConfig  # noqa: E402
from workers.backends.openvino.config import OpenVinoConfig  # noqa: E402
from workers.datasets import DatasetConfig  # noqa: E402
from workers.evaluate import EvalConfig  # noqa: E402
from workers.hardware import probe  # noqa: E402
from workers.models import LoadedModel, ModelConfig  # noqa: E402
from workers.backends.ctranslate2.export import CTranslate2Config  # noqa: E402
from workers.backends.ggml.export import GgmlConfig  # noqa: E402
from workers.trial import Trial, WorkerCache, run_trial  # noqa: E402


def trial_rtf(trial: Trial, cache: WorkerCache) -> tuple[float, object]:
    outcome = run_trial(trial, probe(), cache)
    if outcome.status != "ok":
        raise RuntimeError(f"{trial.quantization.label()}: {outcome.row.get('error')}")
    return outcome.row["rtf"], cache.last_quantized[1].deployable


def direct_ggml_rtf(path: str, loaded: LoadedModel, clips: list, threads: int, audio_s: float) -> float:
    model = Model(path, n_threads=threads, no_timestamps=True, no_context=True, temperature_inc=0.0,
                  print_progress=False, redirect_whispercpp_logs_to=None)
    model.transcribe(np.ascontiguousarray(clips[0].audio, dtype=np.float32))  # warm-up, as the trial's
    started = time.perf_counter()
    for u in clips:
        model.transcribe(np.ascontiguousarray(u.audio, dtype=np.float32))
    return (time.perf_counter() - started) / audio_s


def direct_ct2_rtf(path: str, loaded: LoadedModel, clips: list, threads: int, audio_s: float) -> float:
    processor = loaded.processor
    model = ctranslate2.models.Whisper(path, device="cpu", compute_type="int8", intra_threads=threads)
    prompt = processor.tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])

    def one(audio: np.ndarray) -> None:
        features = processor.feature_extractor([audio], sampling_rate=16_000, return_tensors="np").input_features
        model.generate(ctranslate2.StorageView.from_array(features), [prompt], beam_size=1)

    one(clips[0].audio)  # warm-up
    started = time.perf_counter()
    for u in clips:
        one(u.audio)
    return (time.perf_counter() - started) / audio_s


def _greedy_direct(encode, step, loaded: LoadedModel, clips: list, audio_s: float) -> float:
    """Features, the encoder, then greedy decoding with generate's rules for these settings (the prompt,
    `suppress_tokens` at every step, `begin_suppress_tokens` at the first, end-of-text or 448 positions): the
    runtime's calls and the plain numpy a user of its API writes, nothing of quantsweep's."""
    model, processor = loaded.model, loaded.processor
    generation = model.generation_config
    prompt = np.asarray([processor.tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])])
    suppress, begin_suppress = list(generation.suppress_tokens), list(generation.begin_suppress_tokens)
    eos = generation.eos_token_id
    limit = model.config.max_target_positions - prompt.shape[1]

    def one(audio: np.ndarray) -> None:
        features = processor.feature_extractor([audio], sampling_rate=16_000, return_tensors="np").input_features
        cross_keys, cross_values = encode(features)
        layers, batch, heads, _, head_dim = cross_keys.shape
        keys = values = np.zeros((layers, batch, heads, 0, head_dim), dtype=np.float32)
        ids = prompt
        for position in range(limit):
            logits, keys, values = step(ids, keys, values, cross_keys, cross_values)
            logits[0, suppress] = -np.inf
            if position == 0:
                logits[0, begin_suppress] = -np.inf
            token = int(np.argmax(logits[0]))
            if token == eos:
                break
            ids = np.asarray([[token]])

    one(clips[0].audio)  # warm-up
    started = time.perf_counter()
    for u in clips:
        one(u.audio)
    return (time.perf_counter() - started) / audio_s


def direct_ort_rtf(path: str, loaded: LoadedModel, clips: list, threads: int, audio_s: float) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    encoder, decoder = (ort.InferenceSession(f"{path}/{g}.onnx", options, providers=["CPUExecutionProvider"])
                        for g in ("encoder", "decoder"))
    names = [i.name for i in decoder.get_inputs()]
    return _greedy_direct(lambda f: encoder.run(None, {"input_features": f}),
                          lambda *a: decoder.run(None, dict(zip(names, a))), loaded, clips, audio_s)


def direct_openvino_rtf(path: str, loaded: LoadedModel, clips: list, threads: int, audio_s: float) -> float:
    import openvino as ov

    core, properties = ov.Core(), {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    encoder, decoder = (core.compile_model(f"{path}/{g}.xml", "CPU", properties) for g in ("encoder", "decoder"))

    def run(model, *inputs):
        outputs = model(list(inputs))
        return tuple(outputs[i] for i in range(len(model.outputs)))

    return _greedy_direct(lambda f: run(encoder, f), lambda *a: run(decoder, *a), loaded, clips, audio_s)


def direct_mlx_rtf(path: str, loaded: LoadedModel, clips: list, threads: int, audio_s: float) -> float:
    processor = loaded.processor
    import mlx.core as mx
    from mlx_whisper.decoding import DecodingOptions, decode
    from mlx_whisper.load_models import load_model

    model = load_model(path, dtype=mx.float32)
    options = DecodingOptions(language="en", without_timestamps=True, temperature=0.0, fp16=False)

    def one(audio: np.ndarray) -> None:
        features = processor.feature_extractor([audio], sampling_rate=16_000, return_tensors="np").input_features
        decode(model, model.embed_audio(mx.array(features.transpose(0, 2, 1))), options)

    one(clips[0].audio)  # warm-up
    started = time.perf_counter()
    for u in clips:
        one(u.audio)
    return (time.perf_counter() - started) / audio_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-utterances", type=int, default=None)
    parser.add_argument("--cases", default="ggml_q8_0,ct2_int8,ort_dynamic_int8,openvino_int8",
                        help="comma-separated; also mlx_w4 (one clip: MLX's CPU build is slow)")
    args = parser.parse_args()
    model = ModelConfig(name="whisper-tiny.en", packaged="whisper-tiny.en")
    dataset = DatasetConfig(name="samples", source="samples", max_utterances=args.max_utterances)
    config = EvalConfig(threads=args.threads, warmup_utterances=1)
    hw = probe().hw_class
    direct = {"ggml_q8_0": direct_ggml_rtf, "ct2_int8": direct_ct2_rtf, "ort_dynamic_int8": direct_ort_rtf,
              "openvino_int8": direct_openvino_rtf, "mlx_w4": direct_mlx_rtf}
    cases = {"ggml_q8_0": GgmlConfig(format="q8_0"), "ct2_int8": CTranslate2Config(format="int8"),
             "ort_dynamic_int8": OnnxRuntimeConfig(format="dynamic-int8"), "openvino_int8": OpenVinoConfig(weight_bits=8),
             "mlx_w4": MlxConfig(weight_bits=4, compute_dtype="fp32")}
    chosen = args.cases.split(",")
    unknown = set(chosen) - set(cases)
    if unknown:
        parser.error(f"--cases: unknown {sorted(unknown)}; known: {', '.join(cases)}")
    one_clip = DatasetConfig(name="one", source="samples", max_utterances=1)
    datasets = {name: one_clip if name == "mlx_w4" else dataset for name in chosen}
    # the trial config is canonical JSON (Trial.describe reads it)
    trials = {name: Trial(name, "bench", model, cases[name], datasets[name], hw, config, json.dumps({"case": name}))
              for name in chosen}
    caches = {name: WorkerCache() for name in trials}  # one each, so each keeps its artifact between rounds
    loaded, _ = caches[chosen[0]].model(model)
    clips = {name: [u for u in caches[name].utterances(datasets[name]) if u.audio is not None] for name in chosen}
    rtfs: dict[str, list[float]] = {f"{n}_{side}": [] for n in trials for side in ("trial", "direct")}
    for _ in range(args.rounds):
        for name in chosen:
            rtf, artifact = trial_rtf(trials[name], caches[name])
            rtfs[f"{name}_trial"].append(rtf)
            audio_s = sum(u.duration_s for u in clips[name])
            rtfs[f"{name}_direct"].append(direct[name](str(artifact.path), loaded, clips[name], args.threads, audio_s))
    medians = {k: statistics.median(v) for k, v in rtfs.items()}
    print(f"{ {n: len(c) for n, c in clips.items()} } clips, {args.threads} thread(s), {args.rounds} interleaved rounds")
    for name, values in rtfs.items():
        print(f"{name} RTF per round: {[round(v, 4) for v in values]}")
    figures = {f"{n}_ratio": round(statistics.median(t / d for t, d in zip(rtfs[f"{n}_trial"], rtfs[f"{n}_direct"])), 3)
               for n in trials}
    figures |= {f"{k}_rtf": round(v, 4) for k, v in medians.items()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
