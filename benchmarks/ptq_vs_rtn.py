"""Benchmark: calibrated PTQ (GPTQ, AWQ) against round-to-nearest at the same bits, with their default settings.

For each model (default Whisper tiny.en and base) and each of W4 and W3 with groups of 128, RTN, GPTQ and AWQ
run as trials do (in-process, one worker cache, the spec's defaults: asymmetric grids, 8 clips of
`synthetic-calibration`, teacher-forced) and are scored with the drift metric on two evaluation sets: every clip
of `samples` (real speech, about 160 decoder tokens) and the first 100 clips of the synthetic set's eval split
(English sentences the calibration split never holds, about 1,700 tokens; the 14 real clips alone cannot tell
W4 methods apart, README: Calibrated PTQ). Per trial: KL to fp32 (nats per token, teacher-forced on the float
model's greedy ids), top-1 agreement, WER, the seconds calibration took and the decoder tokens and encoder frames
it fed. A method wins at a (model, bits) when its KL over both sets' tokens is below RTN's and its WER over both
sets is not worse than RTN's: the paired bootstrap interval of ΔWER (method - RTN, same clips, 95%) reaches 0 or
below (results/stats.py). Each case also counts its looping clips (more than LOOP_INSERTIONS inserted words: greedy
decoding that repeats itself, which is what decides WER at W3). Last line: JSON, with each set's KL too.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from results.stats import corpus_wer, paired_delta, resample_counts  # noqa: E402
from sweep.plan import expand  # noqa: E402
from sweep.spec import parse_spec  # noqa: E402
from workers.hardware import probe  # noqa: E402
from workers.trial import WorkerCache, run_trial  # noqa: E402

METHODS = ("rtn", "gptq", "awq")
LOOP_INSERTIONS = 50  # the clips scored hold 2 to 22 words: more insertions than this is a decoder repeating itself


def spec(models: list[str], methods: list[str], bits: list[int], utterances: int | None, synthetic: int) -> dict:
    samples = {"name": "samples", "source": "samples"} | ({"max_utterances": utterances} if utterances else {})
    english = {"name": "synthetic", "source": "synthetic", "max_utterances": synthetic}
    return {"sweep": "ptq-vs-rtn", "models": [{"name": m, "packaged": m} for m in models],
            "quantization": [{"library": "none"}] + [{"library": "ptq", "method": m, "weight_bits": b, "group_size": 128}
                                                     for b in bits for m in methods],
            "datasets": [samples] + ([english] if synthetic else []),
            "eval": {"drift": "on", "memory": "off", "warmup_utterances": 0}}


def pooled(rows: list[dict]) -> float:
    """KL per token over several trials' tokens."""
    return sum(r["kl_to_baseline"] * r["kl_tokens"] for r in rows) / sum(r["kl_tokens"] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="whisper-tiny.en,whisper-base")
    parser.add_argument("--methods", default=",".join(METHODS), help="rtn and any of gptq, awq")
    parser.add_argument("--bits", default="4,3")
    parser.add_argument("--utterances", type=int, default=None, help="clips of samples (default: all)")
    parser.add_argument("--synthetic", type=int, default=100, help="clips of the synthetic eval split (0: none)")
    args = parser.parse_args()
    bits, methods = [int(b) for b in args.bits.split(",")], args.methods.split(",")
    if "rtn" not in methods or not set(methods) <= set(METHODS):
        raise SystemExit(f"--methods: rtn and any of gptq, awq (got {args.methods})")
    plan = expand(parse_spec(spec(args.models.split(","), methods, bits, args.utterances, args.synthetic)), "x86-cpu")
    hardware, cache = probe(), WorkerCache()
    rows: dict[tuple[str, str], list[dict]] = {}
    scored: dict[tuple[str, str], list[tuple[str, int, int]]] = {}
    loops: dict[tuple[str, str], int] = {}
    print(f"{'model':16} {'quantization':18} {'dataset':9} {'KL':>8} {'tokens':>6} {'top-1':>6} {'WER':>7} "
          f"{'calibrate s':>11} {'quantize s':>10} {'cal tokens':>10} {'cal frames':>10} {'decoder clipped':>15}")
    for trial in plan.trials:
        outcome = run_trial(trial, hardware, cache, exclusive=False)
        row = outcome.row
        if row["status"] != "ok":
            raise SystemExit(f"{row['quantization']} on {row['model']}: {row['status']}: {row.get('error')}")
        key = (row["model"], row["quantization"])
        rows.setdefault(key, []).append(row)
        scored.setdefault(key, []).extend(
            (f"{row['dataset']}/{u['utt_id']}", u["substitutions"] + u["deletions"] + u["insertions"], u["ref_words"])
            for u in outcome.utterances if u["error"] is None)
        loops[key] = loops.get(key, 0) + sum(u["error"] is None and u["insertions"] > LOOP_INSERTIONS
                                             for u in outcome.utterances)
        print(f"{row['model']:16} {row['quantization']:18} {row['dataset']:9} {row['kl_to_baseline']:8.4f} "
              f"{row['kl_tokens']:6d} {row['top1_agreement']:6.3f} {row['wer'] * 100:6.2f}% "
              f"{row.get('calibrate_s') or 0:11.1f} {row['quantize_s']:10.1f} "
              f"{row.get('calibration_tokens') or '-':>10} {row.get('calibration_frames') or '-':>10} "
              f"{'-' if row.get('decoder_clipped') is None else row['decoder_clipped']!s:>15}", flush=True)
    errors = {key: (np.array([[e for _, e, _ in sorted(s)]], float), np.array([[w for _, _, w in sorted(s)]], float))
              for key, s in scored.items()}
    wins = {}
    for model in args.models.split(","):
        for b in bits:
            rtn = (model, f"ptq-rtn-w{b}-g128")
            for method in [m for m in methods if m != "rtn"]:
                key = (model, f"ptq-{method}-w{b}-g128")
                (e, w), (base_e, base_w) = errors[key], errors[rtn]
                d = paired_delta(e, w, base_e, base_w, resample_counts(e.shape[1]))
                kl, rtn_kl = pooled(rows[key]), pooled(rows[rtn])
                wer, rtn_wer = float(corpus_wer(e, w)[0]), float(corpus_wer(base_e, base_w)[0])
                case = wins[f"{model} {method} w{b}"] = {
                    "kl": round(kl, 4), "rtn_kl": round(rtn_kl, 4), "kl_tokens": sum(r["kl_tokens"] for r in rows[key]),
                    "kl_by_dataset": {r["dataset"]: round(r["kl_to_baseline"], 4) for r in rows[key]},
                    "rtn_kl_by_dataset": {r["dataset"]: round(r["kl_to_baseline"], 4) for r in rows[rtn]},
                    "wer": round(wer, 4), "rtn_wer": round(rtn_wer, 4),
                    "delta_wer_ci": [round(float(d.low[0]), 4), round(float(d.high[0]), 4)],
                    "delta_wer_p": round(float(d.p[0]), 3),
                    "looping_clips": loops[key], "rtn_looping_clips": loops[rtn],
                    "calibrate_s": round(max(r.get("calibrate_s") or 0 for r in rows[key]), 1),
                    # AWQ's clipping check and the calibration transcripts it judged by; None elsewhere
                    "decoder_clipped": rows[key][0].get("decoder_clipped")} | {
                    f"calibration_{name}_{variant}": rows[key][0].get(f"calibration_{name}_{variant}")
                    for name in ("wer", "run_on") for variant in ("clipped", "unclipped")} | {
                    "kl_below_rtn": kl < rtn_kl, "wer_not_worse": bool(d.low[0] <= 0)}
                case["beats_rtn"] = case["kl_below_rtn"] and case["wer_not_worse"]
                print(f"{model:16} {method:5} w{b}: KL {kl:.4f} vs RTN {rtn_kl:.4f} over {case['kl_tokens']} tokens; "
                      f"WER {wer:.2%} vs {rtn_wer:.2%} ({loops[key]} vs {loops[rtn]} looping clips), "
                      f"ΔWER 95% [{d.low[0]:+.2%}, {d.high[0]:+.2%}] p={d.p[0]:.3f}")
    print(f"{sum(w['beats_rtn'] for w in wins.values())} of {len(wins)} (model, method, bits) beat RTN on KL "
          "without a WER shown worse")
    print(json.dumps({"all_beat_rtn": all(w["beats_rtn"] for w in wins.values()), "cases": wins}))


if __name__ == "__main__":
    main()
