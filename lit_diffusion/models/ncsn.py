"""NCSN (Song & Ermon 2019; survey §2.2) and NCSNv2 (Song & Ermon 2020).

A noise-conditional score network s_θ(x, σ) is trained by denoising score matching over the noise ladder
(survey Eq. 11) with λ(σ) = σ²:

    L = E_{i, x, z} ½ ‖σ_i s_θ(x + σ_i z, σ_i) + z‖²    (mean over dimensions here; the paper sums).

NCSNv2's Technique 3 makes the output σ-scaled, s_θ(x, σ) = net(x, σ)/σ (``scale_output``).  As a
denoiser, D(x, σ) = x + σ² s_θ(x, σ) (Tweedie; :class:`~lit_diffusion.preconditioning.ScorePreconditioning`),
so the loss is ½ ‖net + z‖² (NCSNv2) or ½ σ² ‖net + z/σ‖² (NCSN) in the network's units.
The network sees ``noise_cond_scale · log σ``.
"""

from __future__ import annotations

from torch import Tensor

from lit_diffusion.models.base import DiffusionModule
from lit_diffusion.preconditioning import ScorePreconditioning
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
        self.preconditioning = ScorePreconditioning(scale_output, noise_cond_scale)
        self.save_hyperparameters(ignore=["run_config"])

    def sample_sigma(self, batch: int) -> Tensor:
        return self.process.sample_sigmas(batch, self.device)

    def loss_weight(self, sigma: Tensor) -> Tensor | float:
        return 0.5 if self.hparams.scale_output else 0.5 * sigma**2
