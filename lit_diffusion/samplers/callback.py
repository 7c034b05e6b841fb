"""The per-step callback of every sampler (k-diffusion's ``callback``).

After step i a sampler calls ``callback(i, σ_{i+1}, x_{i+1}, x̂_0)`` with the new state in scaled
coordinates (x = x_0 + σ ε) and the denoised estimate the step used.  Progress bars only watch; wrappers
that act between steps (RePaint's replacement of the known region, Lugmayr et al. 2022, Alg. 1) return a
tensor, which replaces x_{i+1}.  SDE-coordinate samplers convert both ways, so the callback always sees
scaled coordinates.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

StepCallback = Callable[[int, float, Tensor, Tensor], "Tensor | None"]


def after_step(callback: StepCallback | None, step: int, sigma_next: float, x: Tensor, denoised: Tensor) -> Tensor:
    """Run ``callback`` after step ``step``; returns the (possibly replaced) next state."""
    if callback is None:
        return x
    replaced = callback(step, sigma_next, x, denoised)
    return x if replaced is None else replaced
