"""Discrete variance-preserving process of DDPM (Ho et al. 2020; survey §2.1, Eq. 1–3).

    q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t I),    q(x_t | x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I),

with ᾱ_t = ∏_{s≤t} (1-β_s).  In the σ view of :mod:`lit_diffusion.processes.base`,
σ_t = √((1-ᾱ_t)/ᾱ_t) and s(σ) = 1/√(1+σ²) = √ᾱ_t.  Timesteps are 0-based, t ∈ {0, …, T-1}, as in the
DDPM reference code (the paper's t = 1 is our t = 0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.processes.base import DiffusionProcess, expand_like, karras_sigmas
from lit_diffusion.processes.sde import VPSDE


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """β_t linear from β_1 to β_T (Ho et al. 2020, §4: 1e-4 … 0.02 for T = 1000)."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def scaled_linear_betas(num_timesteps: int, beta_start: float = 0.0015, beta_end: float = 0.0195) -> Tensor:
    """LDM's "linear" schedule (Rombach et al. 2022; ``make_beta_schedule`` of latent-diffusion): √β linear,
    β_t = (√β_1 + (t−1)/(T−1) (√β_T − √β_1))²; 0.0015 … 0.0195 for LDM, 0.00085 … 0.012 for Stable Diffusion."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, Eq. 17): ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T)+s)/(1+s)·π/2).

    β_t = 1 − ᾱ(t)/ᾱ(t−1), clipped at ``max_beta`` to avoid the singularity at t = T.
    """
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


SCHEDULES = {"linear": linear_betas, "scaled_linear": scaled_linear_betas, "cosine": cosine_betas}


class DiscreteVP(DiffusionProcess):
    """DDPM's forward process over ``num_timesteps`` discrete steps with a named β schedule."""

    def __init__(self, num_timesteps: int = 1000, schedule: str = "linear", **schedule_options):
        super().__init__()
        if schedule not in SCHEDULES:
            raise UserError(f"unknown β schedule '{schedule}': choose one of {sorted(SCHEDULES)}")
        self.num_timesteps = num_timesteps
        self.schedule = schedule
        betas = SCHEDULES[schedule](num_timesteps, **schedule_options)
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        # float64 tables: ᾱ_T ≈ 4e-5 for the linear schedule, σ_T ≈ 157; float32 would lose digits.
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)
        self.register_buffer("sigmas", ((1 - alphas_cumprod) / alphas_cumprod).sqrt(), persistent=False)
        self.register_buffer("log_sigmas", self.sigmas.log(), persistent=False)

    # --- the σ view ---------------------------------------------------------------------------------
    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def scale(self, sigma: Tensor) -> Tensor:
        return 1 / torch.sqrt(1 + sigma**2)

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Continuous timestep for a noise level: linear interpolation of log σ between integer steps."""
        log_sigma = sigma.to(self.log_sigmas.dtype).clamp(min=self.sigma_min, max=self.sigma_max).log()
        high = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, self.num_timesteps - 1)
        low = high - 1
        w = (log_sigma - self.log_sigmas[low]) / (self.log_sigmas[high] - self.log_sigmas[low])
        return (low + w.clamp(0, 1)).to(sigma.dtype)

    def timesteps(self, steps: int | None = None, spacing: str = "linspace") -> Tensor:
        """Decreasing subset of {T-1, …, 0} with ``steps`` elements (all T when ``steps`` is None).

        ``linspace``: round(linspace(0, T-1, steps)) — iDDPM's respacing, keeps both ends;
        ``leading``: 0, k, 2k, … with k = T // steps — DDIM's "uniform" skip (Song et al. 2021a, App. D);
        ``quad``: quadratic spacing, denser at low noise — DDIM's CIFAR-10 choice.
        """
        T = self.num_timesteps
        steps = T if steps is None else int(steps)
        if not 1 <= steps <= T:
            raise UserError(f"sampler.steps={steps} must be between 1 and the process's {T} timesteps")
        if spacing == "linspace":
            t = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long()
        elif spacing == "leading":
            t = torch.arange(0, T, T // steps)[:steps]
        elif spacing == "quad":
            t = (torch.linspace(0, math.sqrt(T * 0.8), steps, dtype=torch.float64) ** 2).long()
        else:
            raise UserError(f"unknown timestep spacing '{spacing}': choose linspace, leading, quad or karras")
        t = torch.unique(t)
        if len(t) != steps:
            raise UserError(f"spacing '{spacing}' cannot place {steps} distinct steps among {T}; use linspace")
        return t.flip(0)

    def sigma_grid(self, steps: int | None = None, spacing: str = "linspace", rho: float = 7.0) -> Tensor:
        """σ of :meth:`timesteps` (``spacing`` linspace | leading | quad), or ``karras``: EDM's ρ-schedule
        between the chain's σ_min and σ_max (continuous σ, fractional timesteps); then 0."""
        if spacing == "karras":
            return karras_sigmas(self.num_timesteps if steps is None else steps, self.sigma_min, self.sigma_max,
                                 rho, self.sigmas.device)
        sigmas = self.sigmas[self.timesteps(steps, spacing).to(self.sigmas.device)]
        return torch.cat([sigmas, sigmas.new_zeros(1)])

    def as_sde(self) -> "VPSDE":
        """The continuous limit (Song et al. 2021, §3.4): VP SDE with β(t) = T·β_{tT}, t ∈ [0, 1]."""
        if self.schedule != "linear":
            raise UserError(f"the {self.schedule} β schedule has no VP-SDE limit here (only linear does); "
                            "use a discrete sampler (ancestral, ddim, langevin) for this model")
        T = self.num_timesteps
        return VPSDE(beta_min=float(self.betas[0]) * T, beta_max=float(self.betas[-1]) * T,
                     t_min=1.0 / T).to(self.betas.device)

    # --- DDPM's own coordinates ---------------------------------------------------------------------
    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean coefficient √ᾱ_t and standard deviation √(1-ᾱ_t) of q(x_t | x_0) (Eq. 3)."""
        a = self.alphas_cumprod[t]
        return a.sqrt(), (1 - a).sqrt()

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε."""
        mean, std = (expand_like(c, x0) for c in self.marginal(t))
        return mean * x0 + std * noise

    def posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, Eq. 6–7); t ≥ 1."""
        a_bar = self.alphas_cumprod[t]
        a_bar_prev = self.alphas_cumprod[t - 1]
        beta = self.betas[t]
        coef_x0 = a_bar_prev.sqrt() * beta / (1 - a_bar)
        coef_xt = (1 - beta).sqrt() * (1 - a_bar_prev) / (1 - a_bar)
        var = beta * (1 - a_bar_prev) / (1 - a_bar)
        return expand_like(coef_x0, x0) * x0 + expand_like(coef_xt, xt) * xt, var

