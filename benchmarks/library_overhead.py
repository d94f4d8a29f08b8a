"""Benchmark: what quantsweep costs each torch library. RTF of a trial ÷ RTF of a plain loop over the library.

For each quantization of sweeps/demo.yaml (or --spec): the quantsweep trial (its `rtf` column, run in-process
with one worker cache, as a runner does), then a plain loop written the way each library's own documentation
shows it (torch.ao `quantize_dynamic`, torchao `quantize_`, hqq `HQQLinear`, transformers'
`BitsAndBytesConfig`, quanto `quantize`/`Calibration`/`freeze`) on the same layers (Whisper's `proj_out`
stays float, as the trial's default exclude), clips, threads and batch (1), with transformers' `generate`
(long-form for clips over 30 s) on processor features. Each pair runs back to back, trial first, so drift in
the machine's speed hits both. Last line: JSON {"<label>_ratio": trial RTF / direct RTF, ..., "max_ratio"}.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from torch import nn

from sweep.plan import expand
from sweep.spec import load_spec
from workers.datasets import Utterance
from workers.evaluate import SAMPLING_RATE
from workers.hardware import probe
from workers.models import LoadedModel, transformers_dir
from workers.models.whisper import DEFAULT_EXCLUDE, WINDOW_S
from workers.backends.base import QuantConfig
from workers.trial import Trial, WorkerCache, run_trial

KEEP_FLOAT = set(DEFAULT_EXCLUDE)


def _linears(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in KEEP_FLOAT]


def _generate(model: nn.Module, processor, audio) -> None:
    """transformers' documented calls: short-form on the 30 s features, long-form with timestamps."""
    if len(audio) > WINDOW_S * SAMPLING_RATE:
        inputs = processor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt", truncation=False,
                           padding="longest", return_attention_mask=True)
        model.generate(inputs.input_features, attention_mask=inputs.attention_mask, return_timestamps=True)
    else:
        model.generate(processor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features)


def _direct_model(q: QuantConfig, loaded: LoadedModel, path: str, calibration: list[Utterance]) -> nn.Module:
    model = copy.deepcopy(loaded.model)
    if q.library == "none":
        return model
    if q.library == "torch":
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
        return quantize_dynamic(model, {name: default_dynamic_qconfig for name in _linears(model)}, dtype=torch.qint8)
    if q.library == "torchao":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
        quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn not in KEEP_FLOAT)
        return model
    if q.library == "hqq":
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear
        config = BaseQuantizeConfig(nbits=q.weight_bits, group_size=q.group_size)
        for name in _linears(model):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child,
                    HQQLinear(model.get_submodule(name), config, compute_dtype=torch.float32, device="cpu"))
        return model
    if q.library == "bnb":
        from transformers import BitsAndBytesConfig, WhisperForConditionalGeneration
        config = (BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(KEEP_FLOAT)) if q.scheme == "int8"
                  else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.scheme, bnb_4bit_compute_dtype=torch.float32,
                                          llm_int8_skip_modules=list(KEEP_FLOAT)))
        return WhisperForConditionalGeneration.from_pretrained(path, quantization_config=config, device_map="cpu",
                                                               dtype=torch.float32).eval()
    if q.library == "quanto":
        from optimum.quanto import Calibration, freeze, quantize
        static = q.activations != "none"
        # the library's own default: every Linear and (with activations) LayerNorm; only proj_out left out
        quantize(model, weights=f"q{q.weights}", activations=f"q{q.activations}" if static else None,
                 exclude=list(KEEP_FLOAT))
        with torch.no_grad():
            if static:
                with Calibration():
                    for u in calibration:
                        _generate(model, loaded.processor, u.audio)
            freeze(model)
        return model
    raise SystemExit(f"no direct loop for library {q.library!r}")


def direct_rtf(model: nn.Module, processor, clips: list[Utterance]) -> float:
    with torch.no_grad():
        _generate(model, processor, clips[0].audio)  # warm-up, as the trial's
        started = time.perf_counter()
        for u in clips:
            _generate(model, processor, u.audio)
    return (time.perf_counter() - started) / sum(u.duration_s for u in clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", default="sweeps/demo.yaml")
    parser.add_argument("--only", nargs="*", help="quantization labels to run (default: all of the spec's)")
    args = parser.parse_args()
    hardware = probe()
    trials: list[Trial] = [t for t in expand(load_spec(args.spec), hardware.hw_class).trials
                           if not args.only or t.quantization.label() in args.only]
    cache = WorkerCache()
    loaded, _ = cache.model(trials[0].model)
    path = transformers_dir(trials[0].model)
    clips = [u for u in cache.utterances(trials[0].dataset) if u.audio is not None]
    figures: dict[str, float] = {}
    print(f"{len(clips)} clips, {sum(u.duration_s for u in clips):.1f} s of audio, {hardware.cores} threads")
    for trial in trials:
        outcome = run_trial(trial, hardware, cache)
        if outcome.status != "ok":
            raise SystemExit(f"{trial.quantization.label()}: {outcome.row.get('error')}")
        torch.set_num_threads(outcome.row["threads"])
        calibration = [u for u in cache.utterances(trial.calibration) if u.audio is not None] if trial.calibration else []
        model = _direct_model(trial.quantization, loaded, path, calibration)
        direct = direct_rtf(model, loaded.processor, clips)
        label = trial.quantization.label()
        figures[f"{label}_ratio"] = round(outcome.row["rtf"] / direct, 3)
        print(f"{label}: trial RTF {outcome.row['rtf']:.4f}, direct RTF {direct:.4f}, "
              f"ratio {figures[f'{label}_ratio']:.3f}", flush=True)
        del model
    figures["max_ratio"] = max(figures.values())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
