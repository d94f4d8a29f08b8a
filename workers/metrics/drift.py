"""Drift metric (`eval.drift: on | off`): how far a quantized model's next-token distributions are from its float model's (KL, top-1).

The float model transcribes each utterance greedily once per worker (its `Reference`); every quantized
model is then teacher-forced on those token ids, so both predict the same positions from the same history.
"""
from __future__ import annotations

import copy
import fcntl
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import torch
from torch import nn

from workers.dataset_content import evaluated_hash
from workers.datasets import Utterance
from workers.evaluate import SAMPLING_RATE, EvalConfig
from workers.metrics.base import Tracker, TrialContext
from workers.models import cache_root
from workers.models.forcing import TEACHER_FORCING
from workers.models.whisper import WINDOW_S

if TYPE_CHECKING:
    from workers.device import Device
    from workers.models import LoadedModel
    from workers.trial import Trial, WorkerCache


@dataclass
class Reference:
    """The float model's greedy ids and log-probs per utterance (utterances over one window are left out)."""

    ids: dict[str, torch.Tensor] = field(default_factory=dict)
    log_probs: dict[str, torch.Tensor] = field(default_factory=dict)
    reason: str | None = None  # why there is nothing to compare against, where that is so


def reference(family: str, model: nn.Module, processor: Any, utterances: Sequence[Utterance], config: EvalConfig,
              language: str) -> Reference:
    forcing = TEACHER_FORCING.get(family)
    if forcing is None:
        return Reference(reason=f"family {family} has no teacher-forcing hook for next-token logits")
    ref = Reference()
    with torch.no_grad():
        for u in utterances:
            if u.audio is None or len(u.audio) > WINDOW_S * SAMPLING_RATE:
                continue  # long-form output is stitched from windows; its positions are not one sequence
            ids, generated = forcing.greedy(model, processor, u.audio, config, language)
            if generated:
                ref.ids[u.utt_id] = ids
                ref.log_probs[u.utt_id] = forcing.log_probs(model, processor, u.audio, ids, generated)
    if not ref.ids:
        ref.reason = "no utterance of one window with decoded tokens to compare on"
    return ref


def on_node(key: str, compute: Callable[[], Reference]) -> Reference:
    """The reference once per node: the first runner computes and saves it, the others wait on its lock and
    read it (a node's runners share its cores; computing it once per runner would take them from timed trials)."""
    folder = cache_root() / "drift-references"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.pt"
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return Reference(**torch.load(path))
        ref = compute()
        partial = path.with_suffix(".partial")
        torch.save(ref.__dict__, partial)
        os.replace(partial, path)
        return ref


def drift_columns(ref: Reference, family: str, model: nn.Module | None, processor: Any,
                  utterances: Sequence[Utterance]) -> dict[str, Any]:
    """kl_to_baseline (mean per-token KL(float ‖ quantized), nats), top1_agreement, kl_tokens; NULL with reason."""
    if ref.reason or model is None:
        return {"kl_null_reason": ref.reason or "the runtime exposes no logits"}
    forcing = TEACHER_FORCING[family]
    kl_sum, agree, tokens = 0.0, 0, 0
    with torch.no_grad():
        for u in utterances:
            if u.utt_id not in ref.ids:
                continue
            p_log = ref.log_probs[u.utt_id]
            q_log = forcing.log_probs(model, processor, u.audio, ref.ids[u.utt_id], len(p_log))
            kl_sum += float((p_log.exp() * (p_log - q_log)).sum())
            agree += int((p_log.argmax(-1) == q_log.argmax(-1)).sum())
            tokens += len(p_log)
    return {"kl_to_baseline": kl_sum / tokens, "top1_agreement": agree / tokens, "kl_tokens": tokens}


# The eval settings a float reference transcript depends on (not timing or what else is measured).
REFERENCE_EVAL = {"num_beams", "max_new_tokens", "max_utterances"}


class DriftTracker(Tracker):
    """KL and top-1 agreement of the quantized model's next-token distributions against the float model's."""

    name = "drift"
    null_reason = "kl_null_reason"
    columns = (
        pa.field("kl_to_baseline", pa.float64()),  # mean per-token KL(float ‖ quantized), nats, teacher-forced
        pa.field("top1_agreement", pa.float64()),  # share of those tokens whose argmax agrees with the float model's
        pa.field("kl_tokens", pa.int64()),  # tokens the KL is averaged over
        pa.field("kl_null_reason", pa.string()),  # why kl_to_baseline is NULL
    )

    def measure(self) -> dict[str, Any]:
        ctx = self.context
        if ctx.module is None:
            return {self.null_reason: f"the {ctx.runtime.name} runtime exposes no logits to compare"}
        ref = kept_reference(ctx.cache, ctx.trial, ctx.loaded, ctx.device, ctx.utterances)
        return drift_columns(ref, ctx.loaded.family, ctx.module, ctx.loaded.processor, ctx.utterances)


def kept_reference(cache: WorkerCache, trial: Trial, loaded: LoadedModel, device: Device,
                   utterances: Sequence[Utterance]) -> Reference:
    """The float model's greedy ids and log-probs on the trial's device: once per node, kept by the worker."""
    kept: dict[tuple, Reference] = cache.kept.setdefault(DriftTracker.name, {})
    key = (trial.model, trial.dataset, trial.eval, device.torch_device)
    if key not in kept:
        def compute() -> Reference:
            model = loaded.model if device.is_cpu else copy.deepcopy(loaded.model).to(device.torch_device)
            return reference(loaded.family, model, loaded.processor, utterances, trial.eval, trial.dataset.language)

        # The clips' own hash too: one dataset spec lists other audio once a source's files appear (samples
        # before and after its Debian package) or change, and a reference of other clips scores too few tokens.
        digest = hashlib.sha256(json.dumps([
            trial.model.model_dump(mode="json"), trial.dataset.model_dump(mode="json"),
            trial.eval.model_dump(mode="json", include=REFERENCE_EVAL), device.torch_device,
            importlib.metadata.version("quantsweep"), evaluated_hash(list(utterances))]).encode()).hexdigest()[:20]
        kept[key] = on_node(digest, compute)
    return kept[key]


TRACKER = DriftTracker
