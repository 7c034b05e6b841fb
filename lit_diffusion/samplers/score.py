"""Scores and SDEs for the score-based samplers.

Samplers that integrate the reverse SDE or the probability-flow ODE work in the coordinates of the
process's SDE: a process is one (:class:`~lit_diffusion.processes.sde.SDE`) or has a continuous-time
limit (``as_sde()``: DDPM → VP SDE, NCSN's ladder → VE SDE).  Their score comes from the denoiser,
∇_x log p_t(x) = (m D(x/m, σ) − x)/std² (Tweedie's formula, Efron 2011).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.processes.base import DiffusionProcess, expand_like
from lit_diffusion.processes.sde import SDE
from lit_diffusion.randomness import randn_like
from lit_diffusion.samplers.callback import StepCallback, after_step

Denoiser = Callable[[Tensor, Tensor], Tensor]


def as_sde(process: DiffusionProcess, sampler: str) -> SDE:
    """The SDE of ``process``, or one clear error naming the sampler and the processes it supports."""
    to_sde = getattr(process, "as_sde", None)
    if to_sde is None:
        raise UserError(f"sampler '{sampler}' integrates a reverse SDE/ODE and needs a process with one "
                        f"(VP/VE/sub-VP SDEs, DDPM's linear schedule, NCSN's ladder); "
                        f"{type(process).__name__} has none: use ancestral or ddim")
    return to_sde()


def sde_denoise(denoiser: Denoiser, sde: SDE, x: Tensor, t: float | Tensor) -> Tensor:
    """x̂_0 = D(x/m, std/m) for x in SDE coordinates at time t (Tweedie's denoising step, NCSNv2's and
    score_sde's final noise removal)."""
    m, std = (float(v) for v in sde.marginal(torch.as_tensor(t, dtype=torch.float64).reshape(())))
    return denoiser(x / m, x.new_full((x.shape[0],), std / m))


def sde_score(denoiser: Denoiser, sde: SDE, x: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
    """(∇_x log p_t(x), x̂_0): the score in SDE coordinates and the denoised estimate it came from."""
    m, std = (float(v) for v in sde.marginal(torch.as_tensor(t, dtype=torch.float64).reshape(())))
    x0 = sde_denoise(denoiser, sde, x, t)
    return (m * x0 - x) / std**2, x0


def sde_after_step(callback: StepCallback | None, step: int, sde: SDE, t_next: float, x: Tensor, x0: Tensor) -> Tensor:
    """:func:`~lit_diffusion.samplers.callback.after_step` for a state in SDE coordinates (converted both ways)."""
    if callback is None:
        return x
    m = float(sde.mean_coef(torch.tensor(t_next, dtype=torch.float64)))
    sigma = float(sde.marginal(torch.tensor(t_next, dtype=torch.float64))[1]) / m
    return m * after_step(callback, step, sigma, x / m, x0)


def time_grid(sde: SDE, sigmas: Tensor) -> list[float]:
    """Times of a σ grid (its final 0 excluded), decreasing from ≈ 1 to t_min."""
    return sde.t_from_sigma(sigmas[:-1].to(torch.float64).cpu()).tolist()


def langevin_step(score: Tensor, x: Tensor, step_size: Tensor | float, generator) -> Tensor:
    """x + ε ∇log p + √(2ε) z (unadjusted Langevin dynamics; ε may be per-sample)."""
    noise = randn_like(x, generator)
    if isinstance(step_size, Tensor):
        step_size = expand_like(step_size, x)
    return x + step_size * score + (2 * step_size) ** 0.5 * noise
