"""DDIM (Song, Meng & Ermon 2021, Eq. 12) on a σ grid.

In scaled coordinates (x = x_0 + σ ε) the DDIM update from σ to σ' reads

    x_{σ'} = x̂_0 + √(σ'² − c²) ε̂ + c z,    ε̂ = (x_σ − x̂_0)/σ,    c = η σ' √((σ² − σ'²)/σ²),

which is Eq. 12 divided by √ᾱ_{t-1} (their σ_t(η) becomes c).  η = 0 is the deterministic DDIM, i.e.
Euler's method on the probability-flow ODE in σ (Karras et al. 2022, §3); η = 1 is DDPM's ancestral step
with the posterior variance.  Step skipping is the choice of σ grid.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from lit_diffusion.errors import UserError


@torch.no_grad()
def sample_ddim(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    sigmas: Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    process=None,
) -> Tensor:
    """Run DDIM with stochasticity ``eta`` over ``sigmas`` (decreasing, ending in 0) from x ~ p_T."""
    if not 0.0 <= eta <= 1.0:
        raise UserError(f"sampler.eta={eta} must lie in [0, 1]")
    sigmas = sigmas.tolist()
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        x0 = denoiser(x, x.new_full((x.shape[0],), sigma))
        eps = (x - x0) / sigma
        c = eta * sigma_next * ((sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        x = x0 + (sigma_next**2 - c**2) ** 0.5 * eps
        if c > 0:
            x = x + c * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x
