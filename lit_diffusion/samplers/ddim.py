"""DDIM (Song, Meng & Ermon 2021, Eq. 12) on a σ grid.

In scaled coordinates (x = x_0 + σ ε) the DDIM update from σ to σ' reads

    x_{σ'} = x̂_0 + √(σ'² − c²) ε̂ + c z,    ε̂ = (x_σ − x̂_0)/σ,    c = η σ' √((σ² − σ'²)/σ²),

which is Eq. 12 divided by √ᾱ_{t-1} (their σ_t(η) becomes c).  η = 0 is the deterministic DDIM, i.e.
Euler's method on the probability-flow ODE in σ (Karras et al. 2022, §3); η = 1 is DDPM's ancestral step
with the posterior variance.  Step skipping is the choice of σ grid.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.randomness import randn_like
from lit_diffusion.samplers.callback import StepCallback, after_step


@torch.no_grad()
def sample_ddim(
    denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    eta: float = 0.0,
    generator=None,
    process=None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Run DDIM with stochasticity ``eta`` over ``sigmas`` (decreasing, ending in 0) from x ~ p_T."""
    if not 0.0 <= eta <= 1.0:
        raise UserError(f"sampler.eta={eta} must lie in [0, 1]")
    sigmas = sigmas.tolist()
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        x0 = denoiser(x, x.new_full((x.shape[0],), sigma))
        eps = (x - x0) / sigma
        c = eta * sigma_next * ((sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        x = x0 + (sigma_next**2 - c**2) ** 0.5 * eps
        if c > 0:
            x = x + c * randn_like(x, generator)
        x = after_step(callback, i, sigma_next, x, x0)
    return x
