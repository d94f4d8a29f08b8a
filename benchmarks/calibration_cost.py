"""Benchmark: seconds of calibration + quantization, and the peak memory, of each ptq method on tiny.en.

Each method runs in a fresh child process (workers/isolation.py), so its RSS high-water mark is its own:
load tiny.en, decode the calibration clips, quantize as a trial does (calibrating on the `calibration`
split first where the method needs it). Last line: JSON {method: {"calibrate_s", "quantize_s",
"peak_rss_bytes", "vs_rtn"}}, where vs_rtn is quantize_s over RTN's.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from sweep.plan import expand
from sweep.spec import parse_spec
from workers.device import Device
from workers.process_memory import reset_rss_peak, rss_peak
from workers.isolation import run_isolated
from workers.deploy import quantize
from workers.trial import WorkerCache

METHODS = {
    "rtn": {"method": "rtn"},
    "gptq": {"method": "gptq"},
    "awq": {"method": "awq"},
    "smoothquant": {"method": "smoothquant", "weight_bits": 8, "act_bits": 8},
    "hadamard": {"method": "hadamard"},
    "hadamard-gptq": {"method": "hadamard", "rounding": "gptq"},
}


def measure(knobs: dict, clips: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    spec = {"sweep": "bench", "models": [{"name": "whisper-tiny.en", "packaged": "whisper-tiny.en"}],
            "quantization": [{"library": "ptq", "weight_bits": 4, "calibration_utterances": clips, **knobs}],
            "datasets": [{"name": "samples", "source": "samples"}]}
    [trial] = expand(parse_spec(spec), "x86-cpu").trials
    cache = WorkerCache()
    loaded, _ = cache.model(trial.model)
    calibration = cache.utterances(trial.calibration) if trial.calibration else None
    reset_rss_peak()
    started = time.perf_counter()
    quantized = quantize(trial, Device("x86-cpu"), loaded, calibration)
    return {"calibrate_s": quantized.calibrate_s, "quantize_s": time.perf_counter() - started,
            "peak_rss_bytes": rss_peak(), "clips": len(calibration or [])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=8, help="calibration clips")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    figures = {}
    for name in args.methods.split(","):
        result, _ = run_isolated(measure, METHODS[name], args.clips, args.threads)
        figures[name] = result
        calibrate = "-" if result["calibrate_s"] is None else f"{result['calibrate_s']:.1f} s"
        print(f"{name:14s} quantize {result['quantize_s']:6.1f} s (calibration {calibrate} on {result['clips']} "
              f"clips), peak RSS {result['peak_rss_bytes'] / 1e6:.0f} MB")
    base = figures.get("rtn", {}).get("quantize_s")
    for name, result in figures.items():
        result["vs_rtn"] = round(result["quantize_s"] / base, 2) if base else None
        result["quantize_s"] = round(result["quantize_s"], 2)
        result["calibrate_s"] = None if result["calibrate_s"] is None else round(result["calibrate_s"], 2)
        del result["clips"]
        if result["vs_rtn"] is not None:
            print(f"{name}: {result['vs_rtn']}x RTN's seconds")
    print(f"tiny.en, {args.clips} calibration clips, {args.threads} threads")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
