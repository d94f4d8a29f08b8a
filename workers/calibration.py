"""Calibration room: what a calibrated torch quantizer runs its model over from the calibration split, and the
figures a row records of it.

Two passes (`calibration_pass`): `teacher-forced` feeds every encoder window of every clip and the decoder the
clip's reference transcript at every position at once (the float model's greedy transcript where the split has
no reference), as GPTQ and AWQ calibrate language models on whole sequences; `generate` runs the transcriber
(the decoder then sees only the tokens greedy decoding emits, one step at a time). A budget in utterances (the
calibration dataset's size), decoder tokens and encoder frames bounds either. A quantizer may also judge a choice
end to end (`transcripts`): the model's own greedy transcripts of the clips, scored.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from workers.datasets import Utterance
from workers.evaluate import SAMPLING_RATE, EvalConfig, Transcriber, run_pass
from workers.models.forcing import TeacherForcing
from workers.scoring import score

CALIBRATION_PASSES = ("teacher-forced", "generate")


class StopForward(Exception):
    """Raised by a hook once a pass has reached every layer it records: the rest of that forward is skipped."""


@dataclass(frozen=True)
class CalibrationPlan:
    """How a quantization calibrates: the pass, and a budget of decoder tokens and encoder frames per pass."""

    calibration_pass: str = "generate"
    max_tokens: int | None = None
    max_frames: int | None = None


Pass = Callable[[nn.Module, nn.Module | None, bool], tuple[int, int | None]]  # (model, stop_after, encoder_done)


@dataclass(frozen=True)
class Transcripts:
    """A model's greedy transcripts of the calibration clips that have a reference, scored: word errors, reference
    words, and the clips whose transcript runs on (more inserted words than the reference holds: the decoder
    repeating itself, which decides a WER over a few short clips more than anything else)."""

    errors: int
    words: int
    run_on: int

    @property
    def wer(self) -> float:
        return self.errors / self.words


@dataclass
class Calibrator:
    """The `calibrate` a quantizer calls, once or once per block (`stop_after`: the module after which the pass
    may stop); `tokens` and `frames` are what one pass feeds, `seconds` every pass's time."""

    plan: CalibrationPlan
    run: Pass
    # the model's own transcripts of the clips that have a reference, scored
    transcribed: Callable[[nn.Module], Transcripts] | None = None
    tokens: int | None = None
    frames: int | None = None
    seconds: list[float] = field(default_factory=list)
    # AWQ's decoder clipping, judged on the transcripts: kept or not, and the transcripts with it and without it
    decoder_clipped: bool | None = None
    clipped: Transcripts | None = None
    unclipped: Transcripts | None = None

    def __call__(self, model: nn.Module, stop_after: nn.Module | None = None, encoder_done: bool = False) -> None:
        """`encoder_done`: the caller records nothing in the encoder and has finished changing it, so a pass may
        start from the encoder states an earlier pass kept (while the encoder's weights are still those)."""
        started = time.perf_counter()
        self.tokens, self.frames = self.run(model, stop_after, encoder_done)
        self.seconds.append(time.perf_counter() - started)

    def transcripts(self, model: nn.Module) -> Transcripts | None:
        """The model's greedy transcripts of the clips with a reference, scored (None: no clip has one), timed as
        calibration: what free-running decoding does, which no layer's error on teacher-forced inputs shows."""
        if self.transcribed is None:
            return None
        started = time.perf_counter()
        scored = self.transcribed(model)
        self.seconds.append(time.perf_counter() - started)
        return scored if scored.words else None

    def columns(self) -> dict[str, Any]:
        judged = {f"calibration_{name}_{variant}": getattr(scored, name) if scored else None
                  for variant, scored in (("clipped", self.clipped), ("unclipped", self.unclipped))
                  for name in ("wer", "run_on")}
        return {"calibration_pass": self.plan.calibration_pass, "calibration_tokens": self.tokens,
                "calibration_frames": self.frames, "decoder_clipped": self.decoder_clipped} | judged


def teacher_forced(forcing: TeacherForcing, processor: Any, clips: list[Utterance], config: EvalConfig,
                   language: str, plan: CalibrationPlan) -> Pass:
    """A pass feeding each window with its share of the reference; the inputs are built on the first call, from
    the model as it is then (the float model: quantizers calibrate before they round anything).

    A whole pass keeps each window's encoder states (`forcing.encoder_states`); a later pass told the encoder is
    done starts the decoder from them while the encoder holds the same weight tensors at the same versions (an
    in-place rounding bumps a tensor's version). Block-by-block calibration of the decoder then runs the encoder,
    most of a teacher-forced pass's compute, once rather than once per decoder block."""
    inputs: list[tuple[torch.Tensor, torch.Tensor]] = []
    kept: list[Any] = [[], []]  # the encoder's tensors (with versions), each window's states: the last whole pass

    def prepare(model: nn.Module) -> None:
        tokens = frames = 0
        for clip in clips:
            windows = forcing.windows(model, processor, clip.audio)
            words = clip.reference.split()
            for i, window in enumerate(windows):
                if plan.max_frames is not None and frames + forcing.positions(model) > plan.max_frames:
                    return
                if plan.max_tokens is not None and tokens >= plan.max_tokens:
                    return
                # A long clip's reference is not aligned to its windows: each window takes its share of the words.
                text = " ".join(words[round(len(words) * i / len(windows)):round(len(words) * (i + 1) / len(windows))])
                if text:
                    ids = forcing.prompted(model, processor, text, language)
                else:
                    step = int(forcing.window_s * SAMPLING_RATE)
                    audio = clip.audio[i * step:(i + 1) * step]
                    ids = forcing.greedy(model, processor, audio, config, language)[0]
                if plan.max_tokens is not None:
                    ids = ids[:plan.max_tokens - tokens]
                inputs.append((window, ids))
                tokens, frames = tokens + len(ids), frames + forcing.positions(model)

    def run(model: nn.Module, stop_after: nn.Module | None, encoder_done: bool = False) -> tuple[int, int]:
        with torch.no_grad():
            if not inputs:
                prepare(model)
            # a tensor's version counts its in-place changes; its data pointer changes when `.data` is replaced
            encoder = forcing.encoder(model).state_dict(keep_vars=True).values()
            weights = [(t, t._version, t.data_ptr()) for t in encoder]
            reuse = encoder_done and bool(kept[1]) and len(weights) == len(kept[0]) and all(
                t is k and v == kv and p == kp for (t, v, p), (k, kv, kp) in zip(weights, kept[0]))
            fresh: list[torch.Tensor] = []
            hooks = [stop_after.register_forward_hook(_stop)] if stop_after is not None else []
            if not reuse:
                hooks.append(forcing.encoder_states(model).register_forward_pre_hook(lambda _, a: fresh.append(a[0])))
            try:
                for i, (window, ids) in enumerate(inputs):
                    try:
                        forcing.forced(model, window, ids, kept[1][i] if reuse else None)
                    except StopForward:
                        pass
            finally:
                for hook in hooks:
                    hook.remove()
            if not reuse and len(fresh) == len(inputs):  # a pass that stopped inside the encoder keeps nothing
                kept[:] = [weights, fresh]
        return sum(len(ids) for _, ids in inputs), len(inputs) * forcing.positions(model)

    return run


def generated(transcriber: Transcriber, clips: list[Utterance], batch_size: int, positions: int | None,
              plan: CalibrationPlan) -> Pass:
    """A pass of the transcriber's own decoding over the clips, in the split's order (static scales are running
    averages over forward calls, as quanto's are: another order gives other scales); a budget cuts whole clips."""

    def run(model: nn.Module, _: nn.Module | None, __: bool = False) -> tuple[int, int | None]:
        transcriber.use(model)
        tokens = windows = 0
        budgeted = plan.max_tokens is not None or plan.max_frames is not None
        for batch in ([[c] for c in clips] if budgeted else [clips]):
            if plan.max_tokens is not None and tokens >= plan.max_tokens:
                break
            if plan.max_frames is not None and positions and (windows + 1) * positions > plan.max_frames:
                break
            stages = run_pass(transcriber, batch, batch_size, in_order=True).stages
            tokens, windows = tokens + stages.decoded_tokens, windows + stages.encoder_windows
        return tokens, windows * positions if positions else None

    return run


def transcribed(transcriber: Transcriber, clips: list[Utterance], batch_size: int,
                normalizer: str) -> Callable[[nn.Module], Transcripts]:
    """The model's transcripts of the clips that have a reference, scored."""
    scored = [clip for clip in clips if clip.reference]

    def run(model: nn.Module) -> Transcripts:
        transcriber.use(model)
        texts = run_pass(transcriber, scored, batch_size, in_order=True).texts
        scores = [score(clip.reference, texts[clip.utt_id], normalizer) for clip in scored]
        return Transcripts(sum(s.substitutions + s.deletions + s.insertions for s in scores),
                           sum(s.ref_words for s in scores), sum(s.insertions > s.ref_words for s in scores))

    return run


def _stop(*_: Any) -> None:
    raise StopForward
