"""Benchmark: what quantsweep's runtime seam costs. RTF of a trial ÷ RTF of a plain loop over the runtime.

For ggml q8_0 (whisper.cpp, evaluated in an isolated child) and CTranslate2 int8 on tiny.en: each round runs
the quantsweep trial (its `rtf` column) and then a plain loop that calls the runtime directly on the same
artifact, clips and threads (pywhispercpp's Model.transcribe; ctranslate2.models.Whisper.generate on the
feature extractor's features), interleaved round by round so that drift in the machine's speed hits both.
Last line: JSON {"ggml_q8_0_ratio", "ct2_int8_ratio", ...}: the median over rounds of each round's trial RTF ÷
direct RTF (a pair run back to back shares the machine's state; 1.0 = no overhead), and the median RTFs.
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

from workers.datasets import DatasetConfig  # noqa: E402
from workers.evaluate import EvalConfig  # noqa: E402
from workers.hardware import probe  # noqa: E402
from workers.models import ModelConfig  # noqa: E402
from workers.backends.ctranslate2.export import CTranslate2Config  # noqa: E402
from workers.backends.ggml.export import GgmlConfig  # noqa: E402
from workers.trial import Trial, WorkerCache, run_trial  # noqa: E402


def trial_rtf(trial: Trial, cache: WorkerCache) -> tuple[float, object]:
    outcome = run_trial(trial, probe(), cache)
    if outcome.status != "ok":
        raise RuntimeError(f"{trial.quantization.label()}: {outcome.row.get('error')}")
    return outcome.row["rtf"], cache.last_quantized[1]


def direct_ggml_rtf(path: str, clips: list, threads: int, audio_s: float) -> float:
    model = Model(path, n_threads=threads, no_timestamps=True, no_context=True, temperature_inc=0.0,
                  print_progress=False, redirect_whispercpp_logs_to=None)
    model.transcribe(np.ascontiguousarray(clips[0].audio, dtype=np.float32))  # warm-up, as the trial's
    started = time.perf_counter()
    for u in clips:
        model.transcribe(np.ascontiguousarray(u.audio, dtype=np.float32))
    return (time.perf_counter() - started) / audio_s


def direct_ct2_rtf(path: str, processor: object, clips: list, threads: int, audio_s: float) -> float:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-utterances", type=int, default=None)
    args = parser.parse_args()
    model = ModelConfig(name="whisper-tiny.en", packaged="whisper-tiny.en")
    dataset = DatasetConfig(name="samples", source="samples", max_utterances=args.max_utterances)
    config = EvalConfig(threads=args.threads, warmup_utterances=1)
    hw = probe().hw_class
    trials = {name: Trial(name, "bench", model, q, dataset, hw, config, name)
              for name, q in (("ggml_q8_0", GgmlConfig(type="q8_0")), ("ct2_int8", CTranslate2Config(compute_type="int8")))}
    caches = {name: WorkerCache() for name in trials}  # one each, so each keeps its artifact between rounds
    loaded, _ = caches["ct2_int8"].model(model)
    clips = [u for u in caches["ct2_int8"].utterances(dataset) if u.audio is not None]
    audio_s = sum(u.duration_s for u in clips)
    rtfs: dict[str, list[float]] = {f"{n}_{side}": [] for n in trials for side in ("trial", "direct")}
    for _ in range(args.rounds):
        rtf, artifact = trial_rtf(trials["ggml_q8_0"], caches["ggml_q8_0"])
        rtfs["ggml_q8_0_trial"].append(rtf)
        rtfs["ggml_q8_0_direct"].append(direct_ggml_rtf(str(artifact.path), clips, args.threads, audio_s))
        rtf, artifact = trial_rtf(trials["ct2_int8"], caches["ct2_int8"])
        rtfs["ct2_int8_trial"].append(rtf)
        rtfs["ct2_int8_direct"].append(direct_ct2_rtf(str(artifact.path), loaded.processor, clips, args.threads,
                                                      audio_s))
    medians = {k: statistics.median(v) for k, v in rtfs.items()}
    print(f"{len(clips)} clips, {audio_s:.1f} s of audio, {args.threads} thread(s), {args.rounds} interleaved rounds")
    for name, values in rtfs.items():
        print(f"{name} RTF per round: {[round(v, 4) for v in values]}")
    figures = {f"{n}_ratio": round(statistics.median(t / d for t, d in zip(rtfs[f"{n}_trial"], rtfs[f"{n}_direct"])), 3)
               for n in trials}
    figures |= {f"{k}_rtf": round(v, 4) for k, v in medians.items()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
