"""PTQ room, GPTQ: column-by-column rounding with error feedback through the inverse Hessian of the inputs."""
from __future__ import annotations

import torch

from workers.backends.torch.ptq.grid import Grid

BLOCK = 128  # columns whose errors are propagated lazily together (the reference implementation's block)


def gptq(weight: torch.Tensor, hessian: torch.Tensor, grid: Grid, damping: float, act_order: bool) -> torch.Tensor:
    """The (out, in) weight rounded onto `grid` by GPTQ given H = Σ x xᵀ of its inputs; returns float values."""
    w = weight.detach().double().clone()
    h = hessian.double().clone()
    in_features = w.shape[1]
    group = grid.group_size or in_features
    if in_features % group:
        raise ValueError(f"group_size {group} does not divide the layer's {in_features} inputs")
    dead = torch.diag(h) == 0  # inputs calibration never exercised: any value is as good as 0
    h[dead, dead] = 1
    w[:, dead] = 0
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(in_features)
    w, h = w[:, perm], h[perm][:, perm]
    h += damping * torch.mean(torch.diag(h)) * torch.eye(in_features, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    scale, zero = grid.params(w) if grid.group_size is None else (None, None)
    for start in range(0, in_features, BLOCK):
        end = min(start + BLOCK, in_features)
        block, errors, hblock = w[:, start:end].clone(), torch.zeros_like(w[:, start:end]), hinv[start:end, start:end]
        for i in range(end - start):
            column = start + i
            if grid.group_size is not None and column % group == 0:
                # A group's grid comes from its columns as updated by the errors of the columns before it.
                current = torch.cat([block[:, i:], w[:, end:]], dim=1)[:, :group]
                scale, zero = grid.params(current)
            rounded = grid.round(block[:, i : i + 1], scale, zero)[:, 0]
            q[:, column] = rounded
            err = (block[:, i] - rounded) / hblock[i, i]
            block[:, i:] -= err.unsqueeze(1) @ hblock[i, i:].unsqueeze(0)
            errors[:, i] = err
        w[:, end:] -= errors @ hinv[start:end, end:]
    return q[:, torch.argsort(perm)].to(weight.dtype)
