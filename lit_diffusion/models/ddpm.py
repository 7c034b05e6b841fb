"""DDPM (Ho et al. 2020; survey §2.1) on the discrete VP process.

Training minimises L_simple (survey Eq. 6; Ho et al. Eq. 14) with a selectable prediction target:

    L = E_{t ~ U{0..T-1}, x_0, ε} ‖ target − net(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t) ‖²,  target ∈ {ε, x_0, v},

which is the shared loss of :class:`~lit_diffusion.models.base.DiffusionModule` with σ = σ_t, t uniform, and
unit weight in the network's units, or with ``snr_gamma`` = γ Min-SNR-γ weighting (Hang et al. 2023, Eq. 6–8):
the loss in x_0 units weighted by min(SNR, γ), SNR = ᾱ/(1 − ᾱ) = 1/σ², which in the network's units is
λ'(σ) = min(SNR, γ) · c_out(σ)²: min(SNR, γ)/SNR for ε, min(SNR, γ) for x_0, min(SNR, γ)/(SNR + 1) for v.
As a denoiser the network sees x_t = s(σ)·x and the (possibly fractional) timestep of σ
(:class:`~lit_diffusion.preconditioning.PredictionPreconditioning`), so any σ grid the samplers choose maps onto
the discrete chain.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.models.base import DiffusionModule
from lit_diffusion.preconditioning import PredictionPreconditioning
from lit_diffusion.processes.discrete_vp import DiscreteVP


class DDPM(DiffusionModule):
    """DDPM / DDIM-family model: discrete VP process, L_simple, ε-, x0- or v-prediction.

    Args:
        prediction: what the network outputs: ``eps`` (Ho et al.), ``x0`` or ``v`` (Salimans & Ho 2022).
        snr_gamma: γ of Min-SNR-γ loss weighting (Hang et al. recommend 5); None: L_simple's unit weight.
        Others: see :class:`~lit_diffusion.models.base.DiffusionModule` (``clip_denoised`` defaults to True,
        as DDPM's and DDIM's samplers clip x̂_0).
    """

    process: DiscreteVP

    def __init__(self, *args, prediction: str = "eps", clip_denoised: bool = True, snr_gamma: float | None = None,
                 **kwargs):
        super().__init__(*args, clip_denoised=clip_denoised, **kwargs)
        if snr_gamma is not None and not snr_gamma > 0:
            raise UserError(f"model.snr_gamma={snr_gamma} must be positive (Hang et al. use 5), or null for L_simple")
        self.snr_gamma = snr_gamma
        self.preconditioning = PredictionPreconditioning(prediction, self.process.scale, self.process.sigma_to_t)
        self.save_hyperparameters(ignore=["run_config"])

    def sample_sigma(self, batch: int) -> Tensor:
        t = torch.randint(0, self.process.num_timesteps, (batch,), device=self.device)
        return self.process.sigmas[t]

    def loss_weight(self, sigma: Tensor) -> Tensor | float:
        """λ'(σ) = min(SNR, γ) · c_out(σ)² with ``snr_gamma``, else 1 (see the module docstring)."""
        if self.snr_gamma is None:
            return 1.0
        c_out = self.preconditioning.coefficients(sigma)[1]
        return sigma.pow(-2).clamp(max=self.snr_gamma) * c_out**2
