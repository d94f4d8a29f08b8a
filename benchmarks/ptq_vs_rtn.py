"""Benchmark: calibrated PTQ (GPTQ, AWQ) against round-to-nearest at the same bits, with their default settings.

For each model (default Whisper tiny.en and base) and each of W4 and W3 with groups of 128, RTN, GPTQ and AWQ
run as trials do (in-process, one worker cache, the spec's defaults: asymmetric grids, 8 clips of
`synthetic-calibration`, teacher-forced) and are scored on every clip of `samples` with the drift metric on: KL
to fp32 (nats per token, teacher-forced on the float model's greedy ids), top-1 agreement, WER; with the seconds
calibration took and the decoder tokens and encoder frames it fed. A method wins at a (model, bits) when its KL
is below RTN's and its WER is not worse than RTN's: the paired bootstrap interval of ΔWER (method - RTN, same
clips, 95%) reaches 0 or below (results/stats.py; a handful of clips cannot tell a few words apart). Last line:
JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from results.stats import paired_delta, resample_counts  # noqa: E402
from sweep.plan import expand  # noqa: E402
from sweep.spec import parse_spec  # noqa: E402
from workers.hardware import probe  # noqa: E402
from workers.trial import WorkerCache, run_trial  # noqa: E402

METHODS = ("rtn", "gptq", "awq")


def spec(models: list[str], bits: list[int], utterances: int | None) -> dict:
    dataset = {"name": "samples", "source": "samples"} | ({"max_utterances": utterances} if utterances else {})
    return {"sweep": "ptq-vs-rtn", "models": [{"name": m, "packaged": m} for m in models],
            "quantization": [{"library": "none"}] + [{"library": "ptq", "method": m, "weight_bits": b, "group_size": 128}
                                                     for b in bits for m in METHODS],
            "datasets": [dataset], "eval": {"drift": "on", "memory": "off", "warmup_utterances": 0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="whisper-tiny.en,whisper-base")
    parser.add_argument("--bits", default="4,3")
    parser.add_argument("--utterances", type=int, default=None, help="evaluation clips (default: all of samples)")
    args = parser.parse_args()
    bits = [int(b) for b in args.bits.split(",")]
    plan = expand(parse_spec(spec(args.models.split(","), bits, args.utterances)), "x86-cpu")
    hardware, cache, rows, errors = probe(), WorkerCache(), [], {}
    print(f"{'model':16} {'quantization':18} {'KL':>8} {'top-1':>6} {'WER':>7} {'calibrate s':>11} "
          f"{'quantize s':>10} {'cal tokens':>10} {'cal frames':>10}")
    for trial in plan.trials:
        outcome = run_trial(trial, hardware, cache, exclusive=False)
        row = outcome.row
        scored = sorted((u["utt_id"], u["substitutions"] + u["deletions"] + u["insertions"], u["ref_words"])
                        for u in outcome.utterances if u["error"] is None)
        errors[(row["model"], row["quantization"])] = np.array([[e for _, e, _ in scored]], float), np.array(
            [[w for _, _, w in scored]], float)
        if row["status"] != "ok":
            raise SystemExit(f"{row['quantization']} on {row['model']}: {row['status']}: {row.get('error')}")
        rows.append(row)
        print(f"{row['model']:16} {row['quantization']:18} {row['kl_to_baseline']:8.4f} {row['top1_agreement']:6.3f} "
              f"{row['wer'] * 100:6.2f}% {row.get('calibrate_s') or 0:11.1f} {row['quantize_s']:10.1f} "
              f"{row.get('calibration_tokens') or '-':>10} {row.get('calibration_frames') or '-':>10}", flush=True)
    by = {(r["model"], r["quantization"]): r for r in rows}
    wins = {}
    for model in args.models.split(","):
        for b in bits:
            rtn = by[(model, f"ptq-rtn-w{b}-g128")]
            for method in ("gptq", "awq"):
                r = by[(model, f"ptq-{method}-w{b}-g128")]
                (e, w), (base_e, base_w) = errors[(model, r["quantization"])], errors[(model, rtn["quantization"])]
                d = paired_delta(e, w, base_e, base_w, resample_counts(e.shape[1]))
                wins[f"{model} {method} w{b}"] = {
                    "kl": round(r["kl_to_baseline"], 4), "rtn_kl": round(rtn["kl_to_baseline"], 4),
                    "wer": round(r["wer"], 4), "rtn_wer": round(rtn["wer"], 4),
                    "delta_wer_ci": [round(float(d.low[0]), 4), round(float(d.high[0]), 4)],
                    "delta_wer_p": round(float(d.p[0]), 3), "calibrate_s": round(r["calibrate_s"], 1),
                    "kl_below_rtn": r["kl_to_baseline"] < rtn["kl_to_baseline"], "wer_not_worse": bool(d.low[0] <= 0)}
                wins[f"{model} {method} w{b}"]["beats_rtn"] = (wins[f"{model} {method} w{b}"]["kl_below_rtn"]
                                                                and bool(d.low[0] <= 0))
                print(f"{model:16} {method:5} w{b}: KL {r['kl_to_baseline']:.4f} vs RTN {rtn['kl_to_baseline']:.4f}; "
                      f"WER {r['wer']:.2%} vs {rtn['wer']:.2%}, ΔWER 95% [{d.low[0]:+.2%}, {d.high[0]:+.2%}] "
                      f"p={d.p[0]:.3f}")
    print(f"{sum(w['beats_rtn'] for w in wins.values())} of {len(wins)} (model, method, bits) beat RTN on KL "
          "without a WER shown worse")
    print(json.dumps({"all_beat_rtn": all(w["beats_rtn"] for w in wins.values()), "cases": wins}))


if __name__ == "__main__":
    main()
