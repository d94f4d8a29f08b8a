"""Benchmark: our evaluation loop's RTFx against transformers' ASR pipeline, same clips, batch and threads.

The two are interleaved round by round so that drift in the machine's speed hits both alike. RTFx is audio
seconds / compute seconds (higher is faster). Last line: JSON {"rtfx_ours", "rtfx_pipeline", "ratio"}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import pipeline

from workers.datasets import DatasetConfig
from workers.evaluate import EvalConfig, run_pass
from workers.models import ModelConfig
from workers.models.whisper import WhisperTranscriber
from workers.trial import WorkerCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = WorkerCache()
    loaded, _ = cache.model(ModelConfig(name="whisper-tiny.en", packaged="whisper-tiny.en"))
    clips = [u for u in cache.utterances(DatasetConfig(name="samples", source="samples")) if u.audio is not None]
    audio_s = sum(u.duration_s for u in clips)
    ours = WhisperTranscriber(loaded.model, loaded.processor, "cpu", EvalConfig(batch_size=args.batch_size), "en")
    asr = pipeline("automatic-speech-recognition", model=loaded.model, tokenizer=loaded.processor.tokenizer,
                   feature_extractor=loaded.processor.feature_extractor, device="cpu")
    def inputs() -> list[dict]:  # the pipeline pops the keys of the dicts it is given: fresh ones per call
        return [{"raw": u.audio, "sampling_rate": 16_000} for u in clips]

    run_pass(ours, clips[:1], 1)  # warm-up, both sides
    asr(inputs()[:1])
    rtfx_ours, rtfx_pipeline, same_text = [], [], 0
    for _ in range(args.rounds):
        ours_pass = run_pass(ours, clips, args.batch_size)
        rtfx_ours.append(audio_s / ours_pass.compute_s)
        started = time.perf_counter()
        with torch.no_grad():
            outputs = asr(inputs(), batch_size=args.batch_size)
        rtfx_pipeline.append(audio_s / (time.perf_counter() - started))
        same_text = sum(o["text"].strip() == ours_pass.texts[u.utt_id] for o, u in zip(outputs, clips))
    figures = {
        "rtfx_ours": round(statistics.median(rtfx_ours), 3),
        "rtfx_pipeline": round(statistics.median(rtfx_pipeline), 3),
        "ratio": round(statistics.median(rtfx_ours) / statistics.median(rtfx_pipeline), 3),
    }
    print(f"{len(clips)} clips, {audio_s:.1f} s of audio, batch {args.batch_size}, {args.threads} threads, "
          f"{args.rounds} interleaved rounds; identical transcripts {same_text}/{len(clips)}")
    print(f"ours RTFx per round: {[round(x, 2) for x in rtfx_ours]}; pipeline: {[round(x, 2) for x in rtfx_pipeline]}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
