"""NCSN (Song & Ermon 2019; survey §2.2) and NCSNv2 (Song & Ermon 2020).

A noise-conditional score network s_θ(x, σ) is trained by denoising score matching over the noise ladder
(survey Eq. 11) with λ(σ) = σ²:

    L = E_{i, x, z} ½ ‖σ_i s_θ(x + σ_i z, σ_i) + z‖²    (mean over dimensions here; the paper sums),

NCSNv2's Technique 3 makes the output σ-scaled, s_θ(x, σ) = net(x, σ)/σ (``scale_output``).  As a
denoiser, D(x, σ) = x + σ² s_θ(x, σ) (Tweedie).  The network sees ``noise_cond_scale · log σ``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_diffusion.models.base import DiffusionModule
from lit_diffusion.processes.base import expand_like
from lit_diffusion.processes.ve_ladder import VELadder


class NCSN(DiffusionModule):
    """Score network on NCSN's VE noise ladder.

    Args:
        scale_output: NCSNv2's s_θ = net/σ (True) or the raw output as the score (NCSN).
        noise_cond_scale: the network's noise input is this times log σ (spreads log σ over the range
            a sinusoidal embedding resolves; use 1 with Fourier features).
    """

    process: VELadder

    def __init__(self, *args, scale_output: bool = True, noise_cond_scale: float = 250.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.save_hyperparameters(ignore=["run_config"])

    def score(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
        out = self.network(x, self.hparams.noise_cond_scale * sigma.log(), class_labels)
        return out / expand_like(sigma, x) if self.hparams.scale_output else out

    def loss(self, x0: Tensor, class_labels: Tensor | None = None) -> Tensor:
        sigma = self.process.sample_sigmas(x0.shape[0], x0.device).to(x0.dtype)
        z = torch.randn_like(x0)
        s = self.score(x0 + expand_like(sigma, x0) * z, sigma, class_labels)
        return 0.5 * torch.mean((expand_like(sigma, x0) * s + z) ** 2)

    def denoise(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
        return x + expand_like(sigma, x) ** 2 * self.score(x, sigma, class_labels)
