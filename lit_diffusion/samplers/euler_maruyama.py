"""Euler–Maruyama on the reverse-time SDE (Song et al. 2021, Eq. 6 / survey Eq. 13, Algorithm 3):

    dx = [f(t) x − g(t)² ∇_x log p_t(x)] dt + g(t) dw̄,  integrated from t = 1 to t_min,

followed by a Tweedie denoising step at t_min.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_diffusion.randomness import randn_like
from lit_diffusion.samplers.callback import StepCallback
from lit_diffusion.samplers.score import as_sde, sde_after_step, sde_denoise, sde_score, time_grid


@torch.no_grad()
def sample_euler_maruyama(denoiser, x: Tensor, sigmas: Tensor, *, process, generator=None,
                          callback: StepCallback | None = None) -> Tensor:
    sde = as_sde(process, "euler_maruyama")
    ts = time_grid(sde, sigmas)
    x = x * float(sde.mean_coef(torch.tensor(ts[0], dtype=torch.float64)))  # scaled → SDE coordinates
    for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        x, x0 = reverse_sde_step(denoiser, sde, x, t, t_next, generator)
        x = sde_after_step(callback, i, sde, t_next, x, x0)
    return sde_denoise(denoiser, sde, x, ts[-1])


def reverse_sde_step(denoiser, sde, x: Tensor, t: float, t_next: float, generator) -> tuple[Tensor, Tensor]:
    """One Euler–Maruyama step of the reverse SDE from t to t_next < t; returns (x_next, x̂_0)."""
    t_ = torch.tensor(t, dtype=torch.float64)
    f, g = float(sde.drift_coef(t_)), float(sde.diffusion(t_))
    dt = t_next - t
    score, x0 = sde_score(denoiser, sde, x, t)
    noise = randn_like(x, generator)
    return x + (f * x - g**2 * score) * dt + g * (-dt) ** 0.5 * noise, x0
