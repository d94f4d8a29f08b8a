"""Synthetic results room: deterministic made-up sweeps in the real schema, written through the real Store,
for the tests and the scale benchmark (no model runs; every number is drawn from a seeded generator). The rows
carry the metrics' columns too: a caller imports workers.metrics first, which registers them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from results.store import Store

START = datetime(2025, 1, 1, tzinfo=timezone.utc)
FP32_BYTES = 151_000_000


@dataclass(frozen=True)
class Quantization:
    """A made-up quantization: its label, library/scheme, how many extra errors and how fast, how small."""

    label: str
    library: str
    scheme: str
    weight_bits: int
    error_rate: float  # per reference word
    rtf_factor: float  # RTF relative to fp32
    size_factor: float  # bytes relative to fp32
    dynamic: bool | None = None


FP32 = Quantization("fp32", "none", "fp32", 32, 0.05, 1.0, 1.0)
QUANTIZATIONS = (
    FP32,
    Quantization("torch-dynamic-int8", "torch", "dynamic-int8", 8, 0.05, 0.6, 0.43, True),
    Quantization("hqq-w4-g64", "hqq", "w4", 4, 0.07, 1.3, 0.31, True),
    Quantization("hqq-w3-g64", "hqq", "w3", 3, 0.15, 1.4, 0.27, True),
    Quantization("quanto-w8a8", "quanto", "w8a8", 8, 0.06, 1.1, 0.43, False),
)


def reference_text(utt: int, words: int) -> str:
    return " ".join(f"w{(utt * 7 + k) % 50}" for k in range(words))


def utterance_rows(sweep: str, trial_id: str, run_id: str, q: Quantization, n: int, rng: np.random.Generator,
                   normalizer: str = "whisper-english") -> list[dict[str, Any]]:
    """n utterances whose errors are drawn per word; a hypothesis differs from the reference iff it has errors,
    and two runs' hypotheses of an utterance match iff they made the same number of errors."""
    words = 5 + (np.arange(n) * 7) % 20
    errors = rng.binomial(words, q.error_rate)
    rows = []
    for i in range(n):
        e = int(errors[i])
        subs, dels = e - e // 3, e // 3
        reference = reference_text(i, int(words[i]))
        rows.append({
            "sweep": sweep, "trial_id": trial_id, "run_id": run_id, "utt_id": f"u{i:05d}",
            "duration_s": 0.4 * float(words[i]), "reference": reference,
            "hypothesis": reference if e == 0 else f"{reference} <{e} errors>", "normalizer": normalizer,
            "substitutions": subs, "deletions": dels, "insertions": 0, "ref_words": int(words[i]),
            "ref_chars": len(reference), "char_errors": 2 * e, "seconds": 0.1 * float(words[i]),
        })
    return rows


def trial_row(sweep: str, trial_id: str, run_id: str, model: str, hw_class: str, dataset: str, q: Quantization,
              utterances: list[dict[str, Any]], rng: np.random.Generator, finished: datetime,
              exclusive: bool = True) -> dict[str, Any]:
    """The trials row of a run, its totals computed from its utterance rows as the workers do."""
    ref_words = sum(u["ref_words"] for u in utterances)
    word_errors = sum(u["substitutions"] + u["deletions"] + u["insertions"] for u in utterances)
    ref_chars = sum(u["ref_chars"] for u in utterances)
    char_errors = sum(u["char_errors"] for u in utterances)
    audio = sum(u["duration_s"] for u in utterances)
    rtf = 0.12 * q.rtf_factor * (1 + 0.02 * rng.standard_normal()) * (2.0 if hw_class.endswith("cpu") else 0.3)
    size = int(FP32_BYTES * q.size_factor) + (0 if q is FP32 else int(rng.integers(0, 1000)))
    return {
        "sweep": sweep, "trial_id": trial_id, "status": "ok", "run_id": run_id,
        "config": json.dumps({"model": model, "quantization": q.label, "dataset": dataset, "hardware": hw_class}),
        "model": model, "model_source": "synthetic", "family": "whisper", "quantization": q.label,
        "library": q.library, "scheme": q.scheme, "weight_bits": q.weight_bits, "dynamic": q.dynamic,
        "dataset": dataset, "language": "en", "normalizer": utterances[0]["normalizer"] if utterances else None,
        "n_utterances": len(utterances), "n_utterance_errors": 0, "audio_seconds": audio,
        "ref_words": ref_words, "word_errors": word_errors, "wer": word_errors / ref_words,
        "cer": char_errors / ref_chars, "rtf": rtf, "rtf_best": rtf * 0.98, "rtf_cv": float(abs(rng.normal(0.01, 0.03))),
        "latency_p50_s": rtf * 4.0, "latency_p90_s": rtf * 6.0, "timing_repeats": 3, "timing_exclusive": exclusive,
        "batch_size": 1, "threads": 2, "model_size_bytes": size, "baseline_size_bytes": FP32_BYTES,
        "size_reduction": 1 - size / FP32_BYTES, "peak_mem_bytes": size * 3, "peak_mem_kind": "rss_hwm",
        "hw_class": hw_class, "hw_chip": f"{hw_class}-chip", "hw_simulated": False, "device": "cpu",
        "host": f"{hw_class}-host", "versions": json.dumps({"torch": "2.6.0"}), "attempt": 1,
        "started_at": finished - timedelta(seconds=30), "finished_at": finished,
    }


def failure_row(sweep: str, trial_id: str, model: str, hw_class: str, dataset: str, q: Quantization, status: str,
                error: str, error_type: str | None, finished: datetime) -> dict[str, Any]:
    return {"sweep": sweep, "trial_id": trial_id, "status": status, "error": error, "error_type": error_type,
            "run_id": f"{trial_id}-{status}", "model": model, "quantization": q.label, "library": q.library,
            "scheme": q.scheme, "weight_bits": q.weight_bits, "dataset": dataset, "hw_class": hw_class,
            "hw_chip": None if status == "no_capacity" else f"{hw_class}-chip",
            "host": None if status == "no_capacity" else f"{hw_class}-host",
            "started_at": finished, "finished_at": finished}


def write_grid(store: Store, sweep: str, models: list[str], hw_classes: list[str], datasets: list[str],
               quantizations: tuple[Quantization, ...] = QUANTIZATIONS, utterances: int = 100,
               seed: int = 0, run: int = 0) -> list[tuple[str, str]]:
    """Every model x class x dataset x quantization as an ok trial; (trial_id, run_id) of each, in order."""
    written = []
    index = 0
    for model in models:
        for hw_class in hw_classes:
            for dataset in datasets:
                for q in quantizations:
                    trial_id = f"{sweep}-{model}-{hw_class}-{dataset}-{q.label}"
                    run_id = f"{trial_id}-run{run}"
                    rng = np.random.default_rng([seed, index, run])
                    rows = utterance_rows(sweep, trial_id, run_id, q, utterances, rng)
                    finished = START + timedelta(minutes=index, days=run)
                    store.write_trial(sweep, trial_id, trial_row(sweep, trial_id, run_id, model, hw_class, dataset,
                                                                 q, rows, rng, finished), rows)
                    written.append((trial_id, run_id))
                    index += 1
    return written
