"""PTQ room, AWQ: per-input-channel scales searched on calibration inputs, then each group's clipping range.

Scales follow llmcompressor's AWQModifier defaults (duo scaling, a grid of 20): s = x̄^r / (w̄^(1-r) + 1e-4) for
r in 0..1, with x̄ the mean |input| of each channel and w̄ the mean of each channel's |weight| normalised by its
group's largest, plus the identity; the r whose rounded layers reproduce the float outputs best wins. Clipping
follows the AWQ reference (llm-awq `auto_clip`): for every layer but queries and keys, each group's range shrinks
in 20 steps to half and keeps the bound with the smallest output error on the calibration inputs. An
encoder-decoder's decoder keeps its bounds unless, rounded without them, it transcribes the calibration clips better
(`judge_decoder_clipping`, our addition to the recipe).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from workers.backends.torch.ptq.grid import Grid, fake_quant_tokens
from workers.backends.torch.ptq.transforms import Transform
from workers.calibration import Calibrator

N_GRID = 20
SEARCH = [(0.0, False)] + [(i / (N_GRID - 2), True) for i in range(N_GRID - 1)]  # (ratio, duo scaling)
CLIP_STEPS, MAX_SHRINK = 20, 0.5
UNCLIPPED = ("q_proj", "k_proj")  # their error is squared in the attention scores: the reference leaves them


def weight_means(weights: list[torch.Tensor], grid: Grid) -> torch.Tensor:
    """Per input channel, the mean over every row of the layers of |w| normalised by its group's largest."""
    rows = []
    for w in weights:
        grouped = w.abs().reshape(w.shape[0] * grid.groups(w.shape[1]), -1)
        rows.append((grouped / (grouped.amax(dim=1, keepdim=True) + 1e-6)).reshape(w.shape))
    return torch.cat(rows).mean(dim=0)


def scales(x_mean: torch.Tensor, w_mean: torch.Tensor, ratio: float, duo: bool) -> torch.Tensor:
    s = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4) if duo else x_mean.pow(ratio)).clamp(min=1e-4)
    s = s / (s.max() * s.min()).sqrt()
    return torch.nan_to_num(s, nan=1.0, posinf=1.0)


def search_scale(group: list[nn.Linear], x: torch.Tensor, x_mean: torch.Tensor, grid: Grid,
                 act_bits: int | None, ratios: list[tuple[float, bool]]) -> torch.Tensor:
    """The scale whose rounded layers' outputs on the sampled inputs `x` are closest to the float ones."""
    weights = [layer.weight.detach().float() for layer in group]
    targets = [x @ w.T for w in weights]
    w_mean = weight_means(weights, grid)
    best: tuple[float, torch.Tensor] | None = None
    for ratio, duo in ratios:
        t = Transform(scale=scales(x_mean, w_mean, ratio, duo))
        xq = t.inputs_out(fake_quant_tokens(t.inputs_in(x), act_bits)) if act_bits else x
        loss = sum(float(((xq @ t.weight_out(grid.quantize(t.weight_in(w))).T - y) ** 2).sum())
                   for w, y in zip(weights, targets))
        if best is None or loss < best[0]:
            best = (loss, t.scale)
    return best[1]


def search_clip(w: torch.Tensor, x: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(out, groups) bounds: per group, the shrunk max |w| with the smallest squared error of its partial outputs."""
    out_features, in_features = w.shape
    groups = grid.groups(in_features)
    xg = x.reshape(len(x), groups, -1)  # (tokens, groups, group_size)
    wg = w.reshape(out_features, groups, -1)
    target = torch.einsum("tgk,ogk->otg", xg, wg)
    original = wg.abs().amax(dim=-1)  # (out, groups)
    best, least = original.clone(), torch.full_like(original, float("inf"))
    for step in range(int(MAX_SHRINK * CLIP_STEPS)):
        bound = original * (1 - step / CLIP_STEPS)
        q = grid.quantize(w, clip=bound).reshape(out_features, groups, -1)
        err = (torch.einsum("tgk,ogk->otg", xg, q) - target).pow(2).mean(dim=1)
        better = err < least
        least, best = torch.where(better, err, least), torch.where(better, bound, best)
    return best


def judge_decoder_clipping(model: nn.Module, layers: list[nn.Linear],
                           round_decoder: Callable[[bool], dict[str, Transform]],
                           calibrator: Calibrator) -> dict[str, Transform]:
    """The decoder's clipping judged end to end. Each bound minimises its layer's output error on teacher-forced
    inputs, which says nothing of where free-running decoding goes: at 3 bits on tiny.en the bounds together made
    greedy decoding repeat itself on clips where the decoder rounded without them did not. `round_decoder(clip)`
    rounds `layers` (the decoder's, still float) block after block, with their bounds or without; the bounds are
    kept unless the decoder without them runs on fewer of the calibration clips. A WER difference alone does not
    drop them: 8 short clips are a small jury (base W4: without the bounds the clips' WER was lower, and 2 of the
    100 evaluation clips ran on where 1 did with them). The calibrator records both transcripts' scores and the
    choice; returns the kept rounding's transforms."""
    floats = [layer.weight.detach().clone() for layer in layers]
    bounded = round_decoder(True)
    with_bounds = calibrator.transcripts(model)
    if with_bounds is None:  # no calibration clip has a reference to judge by: the recipe's bounds stay
        return bounded
    clipped = [layer.weight.detach().clone() for layer in layers]
    _load(layers, floats)
    unbounded = round_decoder(False)
    without = calibrator.transcripts(model)
    keep = without is None or without.run_on >= with_bounds.run_on
    if keep:
        _load(layers, clipped)
    calibrator.decoder_clipped, calibrator.clipped, calibrator.unclipped = keep, with_bounds, without
    return bounded if keep else unbounded


def _load(layers: list[nn.Linear], weights: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for layer, weight in zip(layers, weights):
            layer.weight.copy_(weight)
