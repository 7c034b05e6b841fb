"""EDM's forward process (Karras et al. 2022, Table 1, "Ours"): x = x_0 + σ ε with σ(t) = t, s(t) = 1.

Sampling walks the ρ-schedule of Eq. 5 from σ_max = 80 to σ_min = 0.002 (their values for every dataset);
the training distribution of σ belongs to the objective (:mod:`lit_diffusion.preconditioning`), not here.
Its SDE form is the VE SDE with the same end points (dx = √(2σ dσ/dt) dw), which SDE samplers use.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.processes.base import DiffusionProcess, karras_sigmas
from lit_diffusion.processes.sde import VESDE


class EDMProcess(DiffusionProcess):
    """Variance-exploding process on [σ_min, σ_max], sampled on the Karras ρ-schedule."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        super().__init__()
        if not 0 < sigma_min < sigma_max:
            raise UserError(f"need 0 < process.sigma_min < process.sigma_max, got {sigma_min} and {sigma_max}")
        self.lo, self.hi, self.rho = sigma_min, sigma_max, rho
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # tracks the device

    @property
    def sigma_min(self) -> float:
        return self.lo

    @property
    def sigma_max(self) -> float:
        return self.hi

    def start_std(self, sigma: float) -> float:
        return sigma

    def scale(self, sigma: Tensor) -> Tensor:
        return torch.ones_like(sigma)

    def sigma_grid(self, steps: int | None = None, spacing: str = "karras", rho: float | None = None) -> Tensor:
        """``steps`` levels of the ρ-schedule (18 by default, EDM's CIFAR-10 setting), then 0."""
        if spacing != "karras":
            raise UserError(f"unknown sampler.grid.spacing '{spacing}' for EDM's process: it has karras only")
        return karras_sigmas(18 if steps is None else steps, self.lo, self.hi, self.rho if rho is None else rho,
                             self._anchor.device)

    def as_sde(self) -> VESDE:
        return VESDE(sigma_min=self.lo, sigma_max=self.hi).to(self._anchor.device)
