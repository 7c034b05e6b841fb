"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1; survey Algorithm 2).

For each noise level σ_i of the grid, ``steps_each`` Langevin steps in NCSNv2's form (Song & Ermon 2020,
Algorithm 1)
    x ← x + α_i ∇log p_{σ_i}(x) + √(2α_i) z,   α_i = ε σ_i² / σ_L²,
in scaled coordinates (NCSN's Algorithm 1 writes α_i/2 and √α_i: its ε is twice the ε here), where ∇log p_σ(x) = (D(x, σ) − x)/σ².  ε is ``step_size``, or, when None, chosen by
NCSNv2's rule (Song & Ermon 2020, Technique 4): the ε that makes the variance of the last level's
Langevin chain end at σ_L² given γ = σ_{i−1}/σ_i.  The chain ends with a denoising step
x ← D(x, σ_L) (NCSNv2, §4.2).  Works on any process (VP ones are VE in scaled coordinates).
"""

from __future__ import annotations

import math

import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

from lit_diffusion.samplers.callback import StepCallback, after_step
from lit_diffusion.samplers.score import langevin_step


def ncsnv2_step_size(gamma: float, sigma_last: float, steps_each: int) -> float:
    """The ε closest to solving (1 − ε/σ_L²)^{2T} (γ² − 2ε/(σ_L² − σ_L²(1 − ε/σ_L²)²))
    + 2ε/(σ_L² − σ_L²(1 − ε/σ_L²)²) = 1 (exactly solvable only when T is large enough for γ)."""
    s2 = sigma_last**2

    def excess(log_ratio: float) -> float:
        ratio = math.exp(log_ratio)  # ε / σ_L² in (0, 1)
        k = 2 * ratio / (1 - (1 - ratio) ** 2)
        return abs((1 - ratio) ** (2 * steps_each) * (gamma**2 - k) + k - 1)

    best = minimize_scalar(excess, bounds=(math.log(1e-12), math.log(1 - 1e-9)), method="bounded")
    return math.exp(best.x) * s2


@torch.no_grad()
def sample_langevin(denoiser, x: Tensor, sigmas: Tensor, *, process, generator=None,
                    steps_each: int = 5, step_size: float | None = None, denoise: bool = True,
                    callback: StepCallback | None = None) -> Tensor:
    """Annealed Langevin dynamics; the callback runs after each noise level's chain (x at that level)."""
    levels = sigmas[:-1].tolist()
    sigma_last = levels[-1]
    if step_size is None:
        gamma = math.exp((math.log(levels[0]) - math.log(sigma_last)) / max(len(levels) - 1, 1))
        step_size = ncsnv2_step_size(gamma, sigma_last, steps_each)
    for i, sigma in enumerate(levels):
        alpha = step_size * sigma**2 / sigma_last**2
        sig = x.new_full((x.shape[0],), sigma)
        for _ in range(steps_each):
            denoised = denoiser(x, sig)
            x = langevin_step((denoised - x) / sigma**2, x, alpha, generator)
        x = after_step(callback, i, sigma, x, denoised)
    return denoiser(x, x.new_full((x.shape[0],), sigma_last)) if denoise else x
