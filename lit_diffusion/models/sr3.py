"""Image-conditioned diffusion of SR3 and Palette (Saharia et al. 2021, 2022), and SR3's regression baseline.

SR3 ("Image Super-Resolution via Iterative Refinement") and Palette ("Image-to-Image Diffusion Models") are
DDPMs whose network sees the source image (SR3: the bicubic-upsampled low-resolution input; Palette: the masked,
cropped or JPEG-compressed image) concatenated to the noisy target — here the conditioner's ``concat`` route
(:class:`~lit_diffusion.conditioning.ConcatEmbedder`) fed by a pair transform of
:mod:`lit_diffusion.datamodules.pairs`.  What differs from DDPM is the training noise level (SR3 §2.4): instead
of a discrete step, the noise level γ = ᾱ is drawn from the piecewise-uniform

    p(γ) = Σ_{t=1}^{T} (1/T) U(γ_{t−1}, γ_t),   γ_0 = 1,

and the network is conditioned on the continuous level, so any inference schedule (and number of steps) can be
used after training.  The objective is E ‖f(x, √γ y_0 + √(1−γ) ε, γ) − ε‖_p^p with p = 2 or 1 (SR3 Eq. 6;
Palette compares L1 and L2, §5.4).

In the σ view (:mod:`lit_diffusion.processes.discrete_vp`) γ = 1/(1 + σ²); the network's noise input is the
process's continuous timestep of σ (log-σ interpolation between the chain's steps), a fixed monotone function
of γ, so it sees exactly the continuous noise level.

The regression baseline (SR3 §5.1, "a regression model with the same architecture"): the same network and
conditioning predicting x_0 from the condition alone, trained with L2 (:class:`Regression`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.models.base import DiffusionModule
from lit_diffusion.models.ddpm import DDPM
from lit_diffusion.preconditioning import RegressionPreconditioning


def piecewise_uniform_gamma(alphas_cumprod: Tensor, batch: int, device: torch.device | str) -> Tensor:
    """γ ~ Σ_t (1/T) U(γ_{t−1}, γ_t) with γ_0 = 1 (SR3 §2.4): a uniform step, then uniform within it (float64)."""
    gammas = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod]).to(device)
    t = torch.randint(1, len(gammas), (batch,), device=device)
    u = torch.rand(batch, device=device, dtype=torch.float64)
    return gammas[t - 1] + u * (gammas[t] - gammas[t - 1])


class SR3(DDPM):
    """SR3 / Palette: a DDPM trained on continuous noise levels γ ~ p(γ), with an L2 or L1 objective.

    Args:
        loss_norm: 2 (SR3, Palette's default) or 1 (Palette's L1, which it finds lowers sample diversity).
        Others: see :class:`~lit_diffusion.models.ddpm.DDPM`; the conditioner gives the source image.
    """

    def __init__(self, *args, loss_norm: int = 2, **kwargs):
        if loss_norm not in (1, 2):
            raise UserError(f"model.loss_norm must be 1 or 2, got {loss_norm}")
        super().__init__(*args, **kwargs)
        self.loss_norm = loss_norm
        self.save_hyperparameters(ignore=["run_config"])

    def sample_sigma(self, batch: int) -> Tensor:
        gamma = piecewise_uniform_gamma(self.process.alphas_cumprod, batch, self.device)
        return ((1 - gamma) / gamma).sqrt()


class Regression(DiffusionModule):
    """SR3's regression baseline: the network and conditioner of the diffusion model, trained with L2 to predict
    x_0 from the condition alone (:class:`~lit_diffusion.preconditioning.RegressionPreconditioning`: its noisy
    input is zeroed).  It samples like any model (one step of any sampler returns D; use ``sampler.steps=1``),
    so grids, EMA, checkpoints and ``evaluate task=sr`` treat both alike.
    """

    def __init__(self, *args, clip_denoised: bool = True, **kwargs):
        super().__init__(*args, clip_denoised=clip_denoised, **kwargs)
        if not self.conditioner.input_keys:
            raise UserError("a regression model predicts x_0 from a condition: configure a conditioner "
                            "(e.g. conditioner=low_res)")
        self.preconditioning = RegressionPreconditioning()
        self.save_hyperparameters(ignore=["run_config"])

    def sample_sigma(self, batch: int) -> Tensor:
        """Any level: the network never sees it (c_in = c_noise = 0)."""
        return torch.ones(batch, dtype=torch.float64, device=self.device)
