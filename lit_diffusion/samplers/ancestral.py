"""Ancestral sampling (Ho et al. 2020, Algorithm 2; survey Algorithm 1).

Each step draws x_{σ'} ~ N(μ, v) with μ the posterior mean of q(x_{σ'} | x_σ, x̂_0), written in the
scaled coordinates of :mod:`lit_diffusion.processes.base`, where the forward chain is the VE chain
x_σ = x_{σ'} + √(σ² − σ'²) ε; the DDPM Markov chain is exactly this chain in those coordinates, so the
same step serves DDPM, its respaced versions (Nichol & Dhariwal 2021, §4) and NCSN-style VE ladders:

    μ = x̂_0 + (σ'²/σ²)(x_σ − x̂_0)
    v = σ'²(σ² − σ'²)/σ²                     ("posterior": σ_t² = β̃_t)
    v = (s(σ)/s(σ'))² (σ² − σ'²)              ("forward":   σ_t² = β_t, the forward step's variance)
    log v = w log v_forward + (1 − w) log v_posterior   ("learned": w from the denoiser, per element)

The learned interpolation is Nichol & Dhariwal's Eq. 15; on a respaced grid the two variances are the
respaced β_t = 1 − ᾱ_t/ᾱ_{t'} and β̃_t of their §4, so a learned-variance model samples with fewer steps
as it is.  The fixed variances are w = 0 and w = 1 of the same formula.  No noise is added on the final
step to σ' = 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.processes.base import DiffusionProcess
from lit_diffusion.randomness import randn_like
from lit_diffusion.samplers.callback import StepCallback, after_step

VARIANCES = {"posterior": 0.0, "forward": 1.0, "learned": None}  # the interpolation weight w, or the model's


@torch.no_grad()
def sample_ancestral(
    denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    process: DiffusionProcess,
    variance: str = "posterior",
    generator=None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Run the reverse chain over ``sigmas`` (decreasing, ending in 0) from x ~ p_T."""
    if variance not in VARIANCES:
        raise UserError(f"unknown ancestral variance '{variance}': choose one of {', '.join(VARIANCES)}")
    sigmas = sigmas.tolist()
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        out = denoiser(x, x.new_full((x.shape[0],), sigma))
        x0, learned = out if isinstance(out, tuple) else (out, None)
        if variance == "learned" and learned is None:
            raise UserError("sampler.variance=learned needs a model that learns its variance (model=iddpm); "
                            "use sampler.variance=posterior or forward")
        weight = learned if variance == "learned" else VARIANCES[variance]
        if sigma_next == 0:
            x = after_step(callback, i, sigma_next, x0, x0)
            continue
        x = x0 + (sigma_next**2 / sigma**2) * (x - x0)
        ratio = float(process.scale(torch.tensor(sigma)) / process.scale(torch.tensor(sigma_next)))
        log_posterior = x.new_full(x.shape, math.log(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
        log_forward = x.new_full(x.shape, math.log(ratio**2 * (sigma**2 - sigma_next**2)))
        std = torch.exp(0.5 * torch.lerp(log_posterior, log_forward, weight))  # lerp: w = 0 / 1 give either end exactly
        x = after_step(callback, i, sigma_next, x + std * randn_like(x, generator), x0)
    return x
