"""The forward-process interface shared by every framework.

Every process in the survey's generic framework (§2: DDPM, NCSN, score SDEs, EDM) has Gaussian marginals

    q(x_σ | x_0) = N(s(σ) x_0, s(σ)² σ² I),

i.e. ``x = s(σ) (x_0 + σ ε)`` (Karras et al. 2022, Eq. 4 notation).  Samplers work in the *scaled*
coordinates ``y = x / s(σ) = x_0 + σ ε`` and index time by the noise level σ, so one sampler runs on
every process; a process only says how its own coordinates relate to them (:meth:`scale`), where its
a sampler starts (:meth:`start_std`) and which σ grid it samples on (:meth:`sigma_grid`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from lit_diffusion.errors import UserError


class DiffusionProcess(nn.Module, ABC):
    """A forward noising process, seen through its noise level σ.

    Subclasses are ``nn.Module`` so that their tables follow the model across devices; the tables are
    non-persistent buffers, derived from the constructor arguments stored in the model's config.
    """

    @property
    @abstractmethod
    def sigma_min(self) -> float:
        """Smallest noise level the process is trained on."""

    @property
    @abstractmethod
    def sigma_max(self) -> float:
        """Noise level of the prior."""

    @abstractmethod
    def scale(self, sigma: Tensor) -> Tensor:
        """s(σ): the factor between the process's own coordinates and the scaled ones (1 for VE)."""

    @abstractmethod
    def sigma_grid(self, steps: int | None = None, **options) -> Tensor:
        """Decreasing noise levels σ_0 > σ_1 > … > σ_{steps-1} > 0 for a sampler, with a final 0 appended."""

    @property
    def prior_std(self) -> float:
        """Standard deviation of the prior p_T in scaled coordinates: :meth:`start_std` at σ_max."""
        return self.start_std(self.sigma_max)

    def start_std(self, sigma: float) -> float:
        """Standard deviation of the distribution a sampler starts from at noise level σ, in scaled coordinates.

        A VP process has N(0, I) in its own coordinates, i.e. 1/s(σ) = √(1 + σ²) once scaled (this default);
        a VE process has N(0, σ² I) (its override).  At σ < σ_max (a ``leading`` grid, or sampling that
        starts part-way) this is the marginal at the grid's first σ, as diffusers' DDIM starts, not the prior.
        """
        return float(1 / self.scale(torch.tensor(sigma, dtype=torch.float64)))

    def device(self) -> torch.device:
        """Where the process's tables live (CPU for table-free processes)."""
        buffers = list(self.buffers())
        return buffers[0].device if buffers else torch.device("cpu")


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                  device: torch.device | None = None) -> Tensor:
    """EDM's σ schedule (Karras et al. 2022, Eq. 5): σ_i = (σ_max^{1/ρ} + i/(N−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ,
    i = 0 … N−1, then 0.  ρ = 7 spends the steps near σ_min; ρ = 1 is uniform in σ, ρ → ∞ geometric."""
    if steps < 1:
        raise UserError(f"sampler.steps must be a positive integer, got {steps}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64, device=device)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def expand_like(coef: Tensor, like: Tensor) -> Tensor:
    """Broadcast a per-sample coefficient of shape (B,) against a batch, in the batch's dtype."""
    return coef.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))
