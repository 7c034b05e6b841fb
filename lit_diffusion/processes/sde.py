"""Score SDEs (Song et al. 2021; survey §2.3): dx = f(t) x dt + g(t) dw on t ∈ [0, 1].

With a linear drift the marginals are Gaussian, q(x_t | x_0) = N(m(t) x_0, std(t)² I), so in the σ view of
:mod:`lit_diffusion.processes.base` σ(t) = std(t)/m(t) and s(σ) = m(t(σ)).  Every SDE supplies m, std,
f, g and the inverse t(σ); the reverse SDE (Eq. 13) and the probability-flow ODE (Eq. 15) follow from
these and a score, which the samplers take from a denoiser D:

    ∇_x log p_t(x) = (m D(x/m, σ) − x) / std².
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.processes.base import DiffusionProcess, expand_like, karras_sigmas


class SDE(DiffusionProcess):
    """A forward SDE with linear drift; time runs from ``t_min`` (data, ε in score_sde) to 1 (prior).

    Subclasses define :meth:`mean_coef` m(t), :meth:`std` std(t), :meth:`drift_coef` f(t),
    :meth:`diffusion` g(t), :meth:`t_from_sigma` and the prior's standard deviation in SDE coordinates.
    """

    def __init__(self, t_min: float):
        super().__init__()
        self.t_min = t_min
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # tracks the device

    @abstractmethod
    def mean_coef(self, t: Tensor) -> Tensor:
        """m(t): mean of q(x_t | x_0) is m(t) x_0."""

    @abstractmethod
    def std(self, t: Tensor) -> Tensor:
        """Standard deviation of q(x_t | x_0)."""

    @abstractmethod
    def drift_coef(self, t: Tensor) -> Tensor:
        """f(t) of the drift f(x, t) = f(t) x."""

    @abstractmethod
    def diffusion(self, t: Tensor) -> Tensor:
        """g(t)."""

    @abstractmethod
    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        """The time at which σ(t) = std(t)/m(t) equals ``sigma``."""

    @property
    @abstractmethod
    def prior_std_sde(self) -> float:
        """Standard deviation of the prior p_1 = N(0, prior_std_sde² I) in SDE coordinates."""

    # --- derived ----------------------------------------------------------------------------------------
    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """f(x, t) = f(t) x for a scalar t or one t per sample."""
        coef = torch.as_tensor(self.drift_coef(torch.as_tensor(t, dtype=torch.float64)))
        return (expand_like(coef, x) if coef.dim() else coef.to(x.dtype)) * x

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(m(t), std(t)) of q(x_t | x_0)."""
        return self.mean_coef(t), self.std(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self.std(t) / self.mean_coef(t)

    def scale(self, sigma: Tensor) -> Tensor:
        return self.mean_coef(self.t_from_sigma(sigma))

    @property
    def sigma_min(self) -> float:
        return float(self.sigma(torch.tensor(self.t_min, dtype=torch.float64)))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma(torch.tensor(1.0, dtype=torch.float64)))

    def prior_logp(self, z: Tensor) -> Tensor:
        """log p_1(z) per sample, z in SDE coordinates: the isotropic Gaussian prior's log-density."""
        dims = z[0].numel()
        var = self.prior_std_sde**2
        return -0.5 * dims * math.log(2 * math.pi * var) - z.flatten(1).pow(2).sum(1) / (2 * var)

    def sigma_grid(self, steps: int | None = None, t_min: float | None = None, spacing: str = "time",
                   rho: float = 7.0) -> Tensor:
        """σ(t_i) for t_i = linspace(1, t_min, steps) (``time``: score_sde's grid; 1000 steps by default), or
        EDM's ρ-schedule between σ(t_min) and σ(1) (``karras``); then 0."""
        steps = 1000 if steps is None else steps
        if steps < 1:
            raise UserError(f"sampler.steps must be a positive integer for a continuous-time SDE, got {steps}")
        t_min = self.t_min if t_min is None else t_min
        if spacing == "karras":
            lo, hi = (float(self.sigma(torch.tensor(t, dtype=torch.float64))) for t in (t_min, 1.0))
            return karras_sigmas(steps, lo, hi, rho, self._anchor.device)
        if spacing != "time":
            raise UserError(f"unknown sampler.grid.spacing '{spacing}' for an SDE: choose time or karras")
        t = torch.linspace(1.0, t_min, steps, dtype=torch.float64)
        sigmas = self.sigma(t).to(self._anchor.device)
        return torch.cat([sigmas, sigmas.new_zeros(1)])

    def as_sde(self) -> "SDE":
        return self


class VPSDE(SDE):
    """Variance-preserving SDE (Eq. 11 of Song et al. 2021): dx = −½β(t) x dt + √β(t) dw, β linear.

    The continuous limit of DDPM with β_i = β(i/N)/N; β_min = 0.1, β_max = 20 match T = 1000 steps of
    DDPM's 1e-4 … 0.02.  t_min = 1e-3 is score_sde's sampling ε for VP and sub-VP (1e-5 for VE).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3):
        super().__init__(t_min)
        self.beta_min, self.beta_max = beta_min, beta_max

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral_beta(self, t: Tensor) -> Tensor:
        """∫_0^t β(s) ds."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def _t_from_integral(self, integral: Tensor) -> Tensor:
        """Invert ∫_0^t β = ``integral`` (a quadratic in t)."""
        slope = self.beta_max - self.beta_min
        if slope == 0:
            return integral / self.beta_min
        return (-self.beta_min + torch.sqrt(self.beta_min**2 + 2 * slope * integral)) / slope

    def mean_coef(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self.integral_beta(t))

    def std(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(-self.integral_beta(t)))

    def drift_coef(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.beta(t))

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        return self._t_from_integral(torch.log1p(sigma**2))  # σ² = e^{∫β} − 1

    @property
    def prior_std_sde(self) -> float:
        return 1.0


class SubVPSDE(VPSDE):
    """sub-VP SDE (Eq. 17 of Song et al. 2021): dx = −½β x dt + √(β(1 − e^{−2∫β})) dw.

    Same mean as VP, std 1 − e^{−∫β}, always below VP's: better likelihoods.
    """

    def std(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self.integral_beta(t))

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.beta(t) * -torch.expm1(-2 * self.integral_beta(t)))

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        # σ = (1 − m²)/m  ⇒  m = (√(σ² + 4) − σ)/2,  ∫β = −2 log m
        m = (torch.sqrt(sigma**2 + 4) - sigma) / 2
        return self._t_from_integral(-2 * torch.log(m))


class VESDE(SDE):
    """Variance-exploding SDE (Eq. 9 of Song et al. 2021): dx = √(d[σ²(t)]/dt) dw, σ(t) = σ_min (σ_max/σ_min)^t.

    The continuous limit of NCSN's geometric noise ladder.  As in score_sde, q(x_t | x_0) = N(x_0, σ(t)² I).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5):
        super().__init__(t_min)
        self.sigma_lo, self.sigma_hi = sigma_min, sigma_max
        self.log_ratio = math.log(sigma_max / sigma_min)

    def mean_coef(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def std(self, t: Tensor) -> Tensor:
        return self.sigma_lo * torch.exp(t * self.log_ratio)

    def drift_coef(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def diffusion(self, t: Tensor) -> Tensor:
        return self.std(t) * math.sqrt(2 * self.log_ratio)

    def t_from_sigma(self, sigma: Tensor) -> Tensor:
        return torch.log(sigma / self.sigma_lo) / self.log_ratio

    @property
    def prior_std_sde(self) -> float:
        return self.sigma_hi

    def start_std(self, sigma: float) -> float:
        return sigma

