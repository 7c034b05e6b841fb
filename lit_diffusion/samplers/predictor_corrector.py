"""Predictor–corrector sampling (Song et al. 2021, Algorithms 1–2 of App. G).

Predictor: one step of a numerical reverse-SDE solver —
  ``reverse_diffusion``: the reverse of the discretised forward step x_t = a x_{t'} + G z, i.e.
      x_{t'} = x_t − (a − 1) x_t + G² ∇log p_t(x_t) + G z,  a = m(t)/m(t'), G² = std(t)² − a² std(t')²
      (score_sde's ReverseDiffusionPredictor; for VE it is σ_i² − σ_{i−1}², for VP DDPM's β_i);
  ``euler_maruyama``: :func:`~lit_diffusion.samplers.euler_maruyama.reverse_sde_step`.
Corrector: ``corrector_steps`` Langevin steps at the new time with step size ε = 2 α (r ‖z‖ / ‖∇log p‖)²,
r the signal-to-noise ratio ``snr`` and α = m(t')²/m(t)² (1 for VE, DDPM's α_i for VP).
A Tweedie denoising step at t_min ends the chain.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.samplers.euler_maruyama import reverse_sde_step
from lit_diffusion.randomness import randn_like
from lit_diffusion.samplers.callback import StepCallback
from lit_diffusion.samplers.score import as_sde, langevin_step, sde_after_step, sde_denoise, sde_score, time_grid

PREDICTORS = ("reverse_diffusion", "euler_maruyama")


def reverse_diffusion_step(denoiser, sde, x: Tensor, t: float, t_next: float, generator) -> tuple[Tensor, Tensor]:
    (m, std), (m_next, std_next) = (
        (float(v) for v in sde.marginal(torch.tensor(s, dtype=torch.float64))) for s in (t, t_next))
    a = m / m_next
    g2 = std**2 - a**2 * std_next**2
    score, x0 = sde_score(denoiser, sde, x, t)
    noise = randn_like(x, generator)
    return x - (a - 1) * x + g2 * score + g2**0.5 * noise, x0


def langevin_corrector(denoiser, sde, x: Tensor, t: float, alpha: float, snr: float, steps: int, generator) -> Tensor:
    for _ in range(steps):
        score = sde_score(denoiser, sde, x, t)[0]
        noise_norm = x[0].numel() ** 0.5  # ‖z‖ ≈ √d for z ~ N(0, I)
        score_norm = float(score.flatten(1).norm(dim=1).mean())
        if score_norm == 0:  # the score vanishes to working precision: nothing to correct
            break
        step = 2 * alpha * (snr * noise_norm / score_norm) ** 2
        x = langevin_step(score, x, step, generator)
    return x


@torch.no_grad()
def sample_pc(denoiser, x: Tensor, sigmas: Tensor, *, process, generator=None,
              predictor: str = "reverse_diffusion", corrector_steps: int = 1, snr: float = 0.16,
              callback: StepCallback | None = None) -> Tensor:
    if predictor not in PREDICTORS:
        raise UserError(f"unknown predictor '{predictor}': choose one of {', '.join(PREDICTORS)}")
    sde = as_sde(process, "pc")
    step = reverse_diffusion_step if predictor == "reverse_diffusion" else reverse_sde_step
    ts = time_grid(sde, sigmas)
    m = lambda s: float(sde.mean_coef(torch.tensor(s, dtype=torch.float64)))  # noqa: E731
    x = x * m(ts[0])
    for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        x, x0 = step(denoiser, sde, x, t, t_next, generator)
        x = langevin_corrector(denoiser, sde, x, t_next, (m(t_next) / m(t)) ** 2, snr, corrector_steps, generator)
        x = sde_after_step(callback, i, sde, t_next, x, x0)
    return sde_denoise(denoiser, sde, x, ts[-1])
