"""EDM's deterministic/stochastic sampler (Karras et al. 2022, Algorithm 2) and plain Euler.

The probability-flow ODE in scaled coordinates is dx/dσ = (x − D(x, σ))/σ (Karras et al., Eq. 4 with
s ≡ 1, σ(t) = t).  Each step may first "churn": raise σ to σ̂ = (1 + γ)σ by adding fresh noise of variance
σ̂² − σ², γ = min(S_churn/N, √2 − 1) on S_tmin ≤ σ ≤ S_tmax, S_noise inflating it; then an Euler step to σ'
and, unless σ' = 0, Heun's trapezoidal correction (2 NFE per step, 2N − 1 in all).  S_churn = 0 is the
deterministic sampler (Algorithm 1).  Use a Karras grid (``grid: {spacing: karras, rho: 7}``) as EDM does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.randomness import randn_like
from lit_diffusion.samplers.callback import StepCallback, after_step


@torch.no_grad()
def sample_heun(denoiser, x: Tensor, sigmas: Tensor, *, process=None, generator=None, order: int = 2,
                s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
                callback: StepCallback | None = None) -> Tensor:
    """Heun (``order=2``) or Euler (``order=1``) on the PF-ODE over ``sigmas``, with optional churn."""
    if order not in (1, 2):
        raise UserError(f"sampler.order={order}: Euler is 1, Heun 2")
    levels = sigmas.tolist()
    gamma_max = min(s_churn / (len(levels) - 1), math.sqrt(2) - 1)
    for i, (sigma, sigma_next) in enumerate(zip(levels[:-1], levels[1:])):
        gamma = gamma_max if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            noise = randn_like(x, generator)
            x = x + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * noise
        denoised = denoiser(x, x.new_full((x.shape[0],), sigma_hat))
        d = (x - denoised) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * d
        if order == 2 and sigma_next > 0:
            d_next = (x_next - denoiser(x_next, x.new_full((x.shape[0],), sigma_next))) / sigma_next
            x_next = x + (sigma_next - sigma_hat) * (d + d_next) / 2
        x = after_step(callback, i, sigma_next, x_next, denoised)
    return x


def sample_euler(denoiser, x: Tensor, sigmas: Tensor, *, process=None, generator=None, s_churn: float = 0.0,
                 s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
                 callback: StepCallback | None = None) -> Tensor:
    """Euler's method on the PF-ODE (EDM's Algorithm 2 without the second-order correction)."""
    return sample_heun(denoiser, x, sigmas, process=process, generator=generator, order=1, s_churn=s_churn,
                       s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise, callback=callback)
