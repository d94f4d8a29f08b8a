"""Benchmark: what quantsweep costs each torch library. RTF of a trial ÷ RTF of a plain loop over the library.

For each quantization of sweeps/demo.yaml (or --spec): the quantsweep trial (its `rtf` column, run in-process
with a worker cache, as a runner does), and a plain loop written the way each library's own documentation
shows it (torch.ao `quantize_dynamic`, torchao `quantize_`, hqq `HQQLinear`, transformers'
`BitsAndBytesConfig`, quanto `quantize`/`Calibration`/`freeze`) on the same layers (Whisper's `proj_out`
stays float, as the trial's default exclude), clips, threads and batch (1), with transformers' `generate`
(greedy, the model's own length limit, long-form for clips over 30 s) on the processor's features. Each side
quantizes once and keeps its model; then, round by round, each quantization's trial and direct pass run back
to back (which goes first alternates by round), so drift in a shared machine's speed hits both.

Both sides time the same thing per clip: features plus `generate`. The transcripts are compared too: the
same model called the same way gives the same text, so `<label>_same_transcripts` counts the clips whose
trial transcript equals the direct one (a fair comparison has all of them).
Last line: JSON {"<label>_ratio": median over rounds of trial RTF / direct RTF, the median RTFs,
"<label>_same_transcripts" (of "clips"), "<label>_trial_wer" / "_direct_wer" (the trial's normaliser), ...,
"max_ratio"}.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
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
from workers.scoring import score
from workers.trial import Trial, WorkerCache, run_trial

KEEP_FLOAT = set(DEFAULT_EXCLUDE)


def _linears(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in KEEP_FLOAT]


def _generate(model: nn.Module, processor, audio) -> torch.Tensor:
    """transformers' documented calls: short-form on the 30 s features, long-form with timestamps."""
    if len(audio) > WINDOW_S * SAMPLING_RATE:
        inputs = processor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt", truncation=False,
                           padding="longest", return_attention_mask=True)
        return model.generate(inputs.input_features, attention_mask=inputs.attention_mask, return_timestamps=True)
    return model.generate(processor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features)


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
        config = (BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(KEEP_FLOAT)) if q.format == "int8"
                  else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.format, bnb_4bit_compute_dtype=torch.float32,
                                          llm_int8_skip_modules=list(KEEP_FLOAT)))
        return WhisperForConditionalGeneration.from_pretrained(path, quantization_config=config, device_map="cpu",
                                                               dtype=torch.float32).eval()
    if q.library == "quanto":
        from optimum.quanto import Calibration, freeze, quantize
        weights, activations = q.qtypes()  # the spec's bits as quanto's type names (qint8, qint4, qfloat8)
        static = activations is not None
        # the library's own default: every Linear and (with activations) LayerNorm; only proj_out left out
        quantize(model, weights=weights, activations=activations, exclude=list(KEEP_FLOAT))
        with torch.no_grad():
            if static:
                with Calibration():  # the calibration clips one by one, in the dataset's order
                    for u in calibration:
                        _generate(model, loaded.processor, u.audio)
            freeze(model)
        return model
    raise SystemExit(f"no direct loop for library {q.library!r}")


def direct_pass(model: nn.Module, processor, clips: list[Utterance]) -> tuple[float, dict[str, str]]:
    """RTF of a warm-up clip then every clip, timed per clip as the trial times it (features + generate)."""
    texts: dict[str, str] = {}
    spent = 0.0
    with torch.no_grad():
        _generate(model, processor, clips[0].audio)  # warm-up, as the trial's
        for u in clips:
            started = time.perf_counter()
            ids = _generate(model, processor, u.audio)
            spent += time.perf_counter() - started
            texts[u.utt_id] = processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
    return spent / sum(u.duration_s for u in clips), texts


def wer(clips: list[Utterance], texts: dict[str, str], normalizer: str) -> float:
    scores = [score(u.reference, texts[u.utt_id], normalizer) for u in clips]
    return sum(s.substitutions + s.deletions + s.insertions for s in scores) / sum(s.ref_words for s in scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", default="sweeps/demo.yaml")
    parser.add_argument("--only", nargs="*", help="quantization labels to run (default: all of the spec's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-utterances", type=int, default=None, help="evaluation clips (default: the spec's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of both sides (default: the spec's)")
    args = parser.parse_args()
    hardware = probe()
    spec = load_spec(args.spec)
    overrides = {k: v for k, v in (("max_utterances", args.max_utterances), ("threads", args.threads)) if v}
    spec = spec.model_copy(update={"eval": spec.eval.model_copy(update=overrides)})
    trials: list[Trial] = [t for t in expand(spec, hardware.hw_class).trials
                           if not args.only or t.quantization.label() in args.only]
    if any(t.eval.batch_size != 1 for t in trials):
        raise SystemExit("the direct loops run batch 1: use a spec with eval.batch_size 1")
    shared = WorkerCache()
    loaded, _ = shared.model(trials[0].model)
    path = transformers_dir(trials[0].model)
    clips = [u for u in shared.utterances(trials[0].dataset) if u.audio is not None]
    # One cache per trial, sharing the loaded model and the decoded audio: each keeps its own quantized model
    # between rounds, as a worker keeps it between trials of one quantization.
    caches = {t.trial_id: WorkerCache(models=shared.models, baseline_bytes=shared.baseline_bytes,
                                      datasets=shared.datasets) for t in trials}
    direct_models: dict[str, nn.Module] = {}
    print(f"{len(clips)} clips, {sum(u.duration_s for u in clips):.1f} s of audio, {args.rounds} interleaved rounds",
          flush=True)
    for trial in trials:
        torch.set_num_threads(trial.eval.threads or hardware.cores)
        calibration = [u for u in shared.utterances(trial.calibration) if u.audio is not None] if trial.calibration else []
        started = time.perf_counter()
        direct_models[trial.trial_id] = _direct_model(trial.quantization, loaded, path, calibration)
        print(f"{trial.quantization.label()}: direct model built in {time.perf_counter() - started:.1f} s", flush=True)
    rtfs: dict[str, dict[str, list[float]]] = {t.trial_id: {"trial": [], "direct": []} for t in trials}
    same: dict[str, int] = {}
    wers: dict[str, tuple[float, float]] = {}  # the trial's `wer` and the direct transcripts' under its normaliser
    for round_ in range(args.rounds):
        for trial in trials:
            label = trial.quantization.label()
            sides = ["trial", "direct"] if round_ % 2 == 0 else ["direct", "trial"]
            for side in sides:
                if side == "trial":
                    outcome = run_trial(trial, hardware, caches[trial.trial_id])
                    if outcome.status != "ok":
                        raise SystemExit(f"{label}: {outcome.row.get('error')}")
                    threads = outcome.row["threads"]
                    rtfs[trial.trial_id]["trial"].append(outcome.row["rtf"])
                    trial_texts = {u["utt_id"]: u["hypothesis"] for u in outcome.utterances if u["error"] is None}
                else:
                    torch.set_num_threads(trial.eval.threads or hardware.cores)
                    direct_threads = torch.get_num_threads()
                    rtf, direct_texts = direct_pass(direct_models[trial.trial_id], loaded.processor, clips)
                    rtfs[trial.trial_id]["direct"].append(rtf)
            if direct_threads != threads:
                raise SystemExit(f"{label}: the trial ran on {threads} threads, the direct loop on {direct_threads}")
            same[trial.trial_id] = sum(trial_texts[u.utt_id] == direct_texts[u.utt_id] for u in clips)
            normalizer = trial.dataset.normalizer or trial.eval.normalizer
            wers[trial.trial_id] = (outcome.row["wer"], wer(clips, direct_texts, normalizer))
            t, d = rtfs[trial.trial_id]["trial"][-1], rtfs[trial.trial_id]["direct"][-1]
            print(f"round {round_ + 1} {label}: trial RTF {t:.4f}, direct RTF {d:.4f}, ratio {t / d:.3f}, "
                  f"same transcripts {same[trial.trial_id]}/{len(clips)}, threads {threads}", flush=True)
    figures: dict[str, float | int] = {}
    for trial in trials:
        label, r = trial.quantization.label(), rtfs[trial.trial_id]
        figures[f"{label}_ratio"] = round(statistics.median(t / d for t, d in zip(r["trial"], r["direct"])), 3)
        figures[f"{label}_trial_rtf"] = round(statistics.median(r["trial"]), 4)
        figures[f"{label}_direct_rtf"] = round(statistics.median(r["direct"]), 4)
        figures[f"{label}_same_transcripts"] = same[trial.trial_id]
        figures[f"{label}_trial_wer"], figures[f"{label}_direct_wer"] = (round(w, 4) for w in wers[trial.trial_id])
        print(f"{label}: median ratio {figures[f'{label}_ratio']:.3f} (per round "
              f"{[round(t / d, 3) for t, d in zip(r['trial'], r['direct'])]})", flush=True)
    figures["clips"] = len(clips)
    figures["rounds"] = args.rounds
    figures["max_ratio"] = max(v for k, v in figures.items() if k.endswith("_ratio"))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
