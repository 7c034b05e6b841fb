"""NCSN's noise ladder (Song & Ermon 2019; survey §2.2): x̃ = x + σ_i z for a geometric sequence
σ_1 > σ_2 > … > σ_L, i.e. a discrete variance-exploding process (s ≡ 1).  Its continuous limit is the VE
SDE with the same end points (Song et al. 2021, §3.4), which SDE samplers use.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.processes.base import DiffusionProcess, karras_sigmas
from lit_diffusion.processes.sde import VESDE


class VELadder(DiffusionProcess):
    """Geometric noise levels from ``sigma_max`` (σ_1) down to ``sigma_min`` (σ_L), ``num_scales`` of them.

    NCSN: σ_1 = 1, σ_L = 0.01, L = 10.  NCSNv2 (Song & Ermon 2020, Techniques 1–2): σ_1 = the largest
    pairwise distance of the training data, γ = σ_{i-1}/σ_i chosen so that L is large (e.g. 232 on CIFAR-10).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 1.0, num_scales: int = 10):
        super().__init__()
        if not 0 < sigma_min < sigma_max:
            raise UserError(f"need 0 < process.sigma_min < process.sigma_max, got {sigma_min} and {sigma_max}")
        self.num_scales = num_scales
        sigmas = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_scales, dtype=torch.float64))
        self.register_buffer("sigmas", sigmas, persistent=False)  # decreasing: σ_1 … σ_L

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[-1])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[0])

    def start_std(self, sigma: float) -> float:
        return sigma

    def scale(self, sigma: Tensor) -> Tensor:
        return torch.ones_like(sigma)

    def sigma_grid(self, steps: int | None = None, spacing: str = "geometric", rho: float = 7.0) -> Tensor:
        """The ladder itself (``steps`` None or L), or ``steps`` geometric levels between its ends, or EDM's
        ρ-schedule between them (``spacing: karras``); then 0."""
        if spacing == "karras":
            return karras_sigmas(self.num_scales if steps is None else steps, self.sigma_min, self.sigma_max, rho,
                                 self.sigmas.device)
        if spacing != "geometric":
            raise UserError(f"unknown sampler.grid.spacing '{spacing}' for a noise ladder: choose geometric or karras")
        if steps is None or steps == self.num_scales:
            sigmas = self.sigmas
        else:
            if steps < 1:
                raise UserError(f"sampler.steps must be positive, got {steps}")
            sigmas = torch.exp(torch.linspace(math.log(self.sigma_max), math.log(self.sigma_min), steps,
                                              dtype=torch.float64, device=self.sigmas.device))
        return torch.cat([sigmas, sigmas.new_zeros(1)])

    def sample_sigmas(self, batch: int, device: torch.device) -> Tensor:
        """σ_i with i uniform on the ladder (NCSN's training distribution)."""
        return self.sigmas.to(device)[torch.randint(0, self.num_scales, (batch,), device=device)]

    def as_sde(self) -> VESDE:
        return VESDE(sigma_min=self.sigma_min, sigma_max=self.sigma_max).to(self.sigmas.device)
