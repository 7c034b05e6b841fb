"""Probability-flow ODE (Song et al. 2021, Eq. 13 / survey Eq. 15):

    dx/dt = f(t) x − ½ g(t)² ∇_x log p_t(x),

integrated from the grid's first time (≈ 1) to t_min with SciPy's adaptive Runge–Kutta solver (``RK45``,
Dormand–Prince, as in score_sde), then a Tweedie denoising step.  The NFE is whatever the error control
needs for ``rtol``/``atol``.  SciPy never steps past the end time, which matters because the score is
undefined at t ≤ 0.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.samplers.callback import StepCallback, after_step
from lit_diffusion.samplers.score import as_sde, sde_denoise, sde_score, time_grid


def ode_drift(denoiser, sde, x: Tensor, t: float) -> Tensor:
    """The probability-flow drift f(t) x − ½ g(t)² ∇log p_t(x)."""
    t64 = torch.tensor(t, dtype=torch.float64)
    f, g = float(sde.drift_coef(t64)), float(sde.diffusion(t64))
    return f * x - 0.5 * g**2 * sde_score(denoiser, sde, x, t64)[0]


def solve_ode(fn, y0: Tensor, t_start: float, t_end: float, rtol: float, atol: float, method: str) -> Tensor:
    """Integrate dy/dt = fn(t, y) over [t_start, t_end] for a tensor y with SciPy; returns y(t_end)."""
    shape, like = y0.shape, y0

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        state = torch.from_numpy(y).to(like.device, like.dtype).reshape(shape)
        return fn(t, state).detach().reshape(-1).cpu().double().numpy()

    solution = solve_ivp(rhs, (t_start, t_end), y0.detach().reshape(-1).cpu().double().numpy(),
                         rtol=rtol, atol=atol, method=method)
    if not solution.success:
        raise UserError(f"the ODE solver failed: {solution.message}; loosen sampler.rtol/atol")
    return torch.from_numpy(solution.y[:, -1]).to(like.device, like.dtype).reshape(shape)


@torch.no_grad()
def sample_ode(denoiser, x: Tensor, sigmas: Tensor, *, process, generator=None,
               rtol: float = 1e-5, atol: float = 1e-5, method: str = "RK45",
               callback: StepCallback | None = None) -> Tensor:
    """PF-ODE from the grid's first time to t_min, then Tweedie; adaptive, so the callback runs once, at the end."""
    sde = as_sde(process, "ode")
    t_start, t_end = time_grid(sde, sigmas)[0], sde.t_min  # only the start of the grid matters
    x = x * float(sde.mean_coef(torch.tensor(t_start, dtype=torch.float64)))
    x = solve_ode(lambda t, y: ode_drift(denoiser, sde, y, t), x, t_start, t_end, rtol, atol, method)
    x0 = sde_denoise(denoiser, sde, x, t_end)
    return after_step(callback, 0, 0.0, x0, x0)
