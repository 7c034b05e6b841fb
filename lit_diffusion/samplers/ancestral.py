"""Ancestral sampling (Ho et al. 2020, Algorithm 2; survey Algorithm 1).

Each step draws x_{σ'} ~ N(μ, v) with μ the posterior mean of q(x_{σ'} | x_σ, x̂_0), written in the
scaled coordinates of :mod:`lit_diffusion.processes.base`, where the forward chain is the VE chain
x_σ = x_{σ'} + √(σ² − σ'²) ε; the DDPM Markov chain is exactly this chain in those coordinates, so the
same step serves DDPM, its respaced versions (Nichol & Dhariwal 2021, §4) and NCSN-style VE ladders:

    μ = x̂_0 + (σ'²/σ²)(x_σ − x̂_0)
    v = σ'²(σ² − σ'²)/σ²                     ("posterior": σ_t² = β̃_t)
    v = (s(σ)/s(σ'))² (σ² − σ'²)              ("forward":   σ_t² = β_t, the forward step's variance)

No noise is added on the final step to σ' = 0.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.processes.base import DiffusionProcess

VARIANCES = ("posterior", "forward")


@torch.no_grad()
def sample_ancestral(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    sigmas: Tensor,
    *,
    process: DiffusionProcess,
    variance: str = "posterior",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Run the reverse chain over ``sigmas`` (decreasing, ending in 0) from x ~ p_T."""
    if variance not in VARIANCES:
        raise UserError(f"unknown ancestral variance '{variance}': choose one of {', '.join(VARIANCES)}")
    sigmas = sigmas.tolist()
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        x0 = denoiser(x, x.new_full((x.shape[0],), sigma))
        if sigma_next == 0:
            x = x0
            continue
        x = x0 + (sigma_next**2 / sigma**2) * (x - x0)
        if variance == "posterior":
            var = sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2
        else:
            ratio = process.scale(torch.tensor(sigma)) / process.scale(torch.tensor(sigma_next))
            var = float(ratio) ** 2 * (sigma**2 - sigma_next**2)
        x = x + var**0.5 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x
