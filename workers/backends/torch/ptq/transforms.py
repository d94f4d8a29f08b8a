"""PTQ room, input transforms: SmoothQuant/AWQ scales and Hadamard rotations, exact in float, applied per layer.

A layer y = x Wᵀ is rewritten y = (x A)(W A⁻ᵀ)ᵀ for an invertible A; the weight is rounded in the
transformed basis and mapped back (W_eff = Q(W A⁻ᵀ) Aᵀ), and activations, where quantized, are
rounded in it too (x_eff = Q(x A) A⁻¹). For a diagonal A this is what folding 1/s into the
preceding LayerNorm does in a deployment; for a rotation it is QuIP/QuaRot's online Hadamard.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch


@dataclass
class Transform:
    """x -> x A with A = diag(1/scale) (smoothing) or an orthogonal `rotation`; identity when both are None."""

    scale: torch.Tensor | None = None
    rotation: torch.Tensor | None = None

    def weight_in(self, w: torch.Tensor) -> torch.Tensor:  # W A⁻ᵀ
        if self.scale is not None:
            return w * self.scale
        return w @ self.rotation if self.rotation is not None else w

    def weight_out(self, w: torch.Tensor) -> torch.Tensor:  # W Aᵀ
        if self.scale is not None:
            return w / self.scale
        return w @ self.rotation.T if self.rotation is not None else w

    def inputs_in(self, x: torch.Tensor) -> torch.Tensor:  # x A
        if self.scale is not None:
            return x / self.scale
        return x @ self.rotation if self.rotation is not None else x

    def inputs_out(self, x: torch.Tensor) -> torch.Tensor:  # x A⁻¹
        if self.scale is not None:
            return x * self.scale
        return x @ self.rotation.T if self.rotation is not None else x

    def hessian_in(self, h: torch.Tensor) -> torch.Tensor:  # Aᵀ H A: the Hessian of the transformed inputs
        if self.scale is not None:
            inv = (1 / self.scale).double()
            return h * inv[:, None] * inv[None, :]
        return self.rotation.double().T @ h @ self.rotation.double() if self.rotation is not None else h


def smoothquant_scale(abs_max: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """SmoothQuant's s_j = max|x_j|^α / max|W_:j|^(1-α), shared by the layers reading the same input."""
    w_max = torch.stack([w.abs().amax(dim=0) for w in weights]).amax(dim=0).clamp(min=1e-5)
    return (abs_max.clamp(min=1e-5) ** alpha / w_max ** (1 - alpha)).clamp(min=1e-5)


def _paley(q: int) -> torch.Tensor:
    """Paley's construction I: a Hadamard matrix of order q + 1 for a prime q ≡ 3 (mod 4)."""
    residues = {(i * i) % q for i in range(1, q)}
    chi = [0] + [1 if i in residues else -1 for i in range(1, q)]
    jacobsthal = torch.tensor([[chi[(j - i) % q] for j in range(q)] for i in range(q)], dtype=torch.float64)
    core = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    core[0, 1:], core[1:, 0], core[1:, 1:] = 1, -1, jacobsthal
    return core + torch.eye(q + 1, dtype=torch.float64)


PALEY_PRIMES = (3, 7, 11, 19, 23, 31, 43, 47)  # orders 4..48 beyond powers of two: 12, 20, 24, 44, 48, ...


@cache
def hadamard(n: int) -> torch.Tensor:
    """A normalised (orthogonal) Hadamard matrix of order n = m·2^k, m 1 or a Paley order; ValueError otherwise."""
    for base in [torch.ones(1, 1, dtype=torch.float64)] + [_paley(q) for q in PALEY_PRIMES]:
        m = base.shape[0]
        if n % m == 0 and (n // m) & (n // m - 1) == 0:
            h = base
            while h.shape[0] < n:
                h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
            return h / math.sqrt(n)
    raise ValueError(f"no Hadamard matrix of order {n} is built here (orders m·2^k with m in 1, "
                     f"{', '.join(str(q + 1) for q in PALEY_PRIMES)})")


def random_hadamard(n: int, seed: int = 0) -> torch.Tensor:
    """H·diag(±1): randomised signs spread outliers further (QuIP#); seeded, so a trial is reproducible."""
    signs = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed + n), dtype=torch.float64) * 2 - 1
    return (hadamard(n) * signs[None, :]).float()
