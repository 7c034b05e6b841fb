"""DDPM (Ho et al. 2020; survey §2.1) on the discrete VP process.

Training minimises L_simple (survey Eq. 6; Ho et al. Eq. 14) with a selectable prediction target:

    L = E_{t ~ U{0..T-1}, x_0, ε} ‖ target − net(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t) ‖²,  target ∈ {ε, x_0, v}.

As a denoiser the network sees x_t = s(σ)·x and the (possibly fractional) timestep of σ, so any σ grid
the samplers choose maps onto the discrete chain.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_diffusion.models.base import DiffusionModule
from lit_diffusion.parameterizations import check_prediction, predict_x0, training_target
from lit_diffusion.processes.base import expand_like
from lit_diffusion.processes.discrete_vp import DiscreteVP


class DDPM(DiffusionModule):
    """DDPM / DDIM-family model: discrete VP process, L_simple, ε-, x0- or v-prediction.

    Args:
        prediction: what the network outputs: ``eps`` (Ho et al.), ``x0`` or ``v`` (Salimans & Ho 2022).
        Others: see :class:`~lit_diffusion.models.base.DiffusionModule`.
    """

    process: DiscreteVP

    def __init__(self, *args, prediction: str = "eps", **kwargs):
        super().__init__(*args, **kwargs)
        self.prediction = check_prediction(prediction)
        self.save_hyperparameters(ignore=["run_config"])

    def loss(self, x0: Tensor, class_labels: Tensor | None = None) -> Tensor:
        t = torch.randint(0, self.process.num_timesteps, (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        a, b = (expand_like(c, x0) for c in self.process.marginal(t))
        xt = a * x0 + b * eps
        pred = self.network(xt, t.to(x0.dtype), class_labels)
        return torch.mean((pred - training_target(self.prediction, x0, eps, a, b)) ** 2)

    def to_chain(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x_t = s(σ) x, its (fractional) timestep, and the marginal coefficients a = s(σ), b = σ s(σ)."""
        a = expand_like(self.process.scale(sigma), x)
        b = expand_like(sigma, x) * a
        return a * x, self.process.sigma_to_t(sigma), a, b

    def denoise(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
        xt, t, a, b = self.to_chain(x, sigma)
        return predict_x0(self.prediction, self.network(xt, t, class_labels), xt, a, b)
