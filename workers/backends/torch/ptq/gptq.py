"""PTQ room, GPTQ: column-by-column rounding with error feedback through the inverse Hessian of the inputs."""
from __future__ import annotations

import torch

from workers.backends.torch.ptq.grid import Grid

BLOCK = 128  # columns whose errors are propagated lazily together (the reference implementation's block)


def gptq(weight: torch.Tensor, hessian: torch.Tensor, grid: Grid, damping: float, act_order: bool) -> torch.Tensor:
    """The (out, in) weight rounded onto `grid` by GPTQ given H = Σ x xᵀ of its inputs; returns float values.

    As llmcompressor's GPTQModifier does by default: each group's grid comes from the float weight before any
    error feedback ("static" groups, deployable without a g_idx), `act_order` visits the inputs with the largest
    Hessian diagonal first, and `damping` is a share of the mean diagonal added to it.
    """
    w = weight.detach().double().clone()
    h = hessian.double().clone()
    out_features, in_features = w.shape
    groups = grid.groups(in_features)
    scale, zero = (p.reshape(out_features, groups) for p in grid.params(w.reshape(out_features * groups, -1)))
    group_of = torch.arange(in_features) // (in_features // groups)
    dead = torch.diag(h) == 0  # inputs calibration never exercised: any value is as good as 0
    h[dead, dead] = 1
    w[:, dead] = 0
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(in_features)
    w, h, group_of = w[:, perm], h[perm][:, perm], group_of[perm]
    h += damping * torch.mean(torch.diag(h)) * torch.eye(in_features, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    for start in range(0, in_features, BLOCK):
        end = min(start + BLOCK, in_features)
        block, errors, hblock = w[:, start:end].clone(), torch.zeros_like(w[:, start:end]), hinv[start:end, start:end]
        for i in range(end - start):
            g = int(group_of[start + i])
            rounded = grid.round(block[:, i : i + 1], scale[:, g : g + 1], zero[:, g : g + 1])[:, 0]
            q[:, start + i] = rounded
            err = (block[:, i] - rounded) / hblock[i, i]
            block[:, i:] -= err.unsqueeze(1) @ hblock[i, i:].unsqueeze(0)
            errors[:, i] = err
        w[:, end:] -= errors @ hinv[start:end, end:]
    return q[:, torch.argsort(perm)].to(weight.dtype)
