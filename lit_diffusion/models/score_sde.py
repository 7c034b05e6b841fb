"""Score SDE (Song et al. 2021; survey §2.3): continuous-time denoising score matching (survey Eq. 14),

    L = E_{t ~ U[t_min, 1], x_0, ε} λ(t) ‖s_θ(x_t, t) − ∇ log q(x_t | x_0)‖²,   x_t = m(t) x_0 + std(t) ε,

with the score parameterised through a noise prediction, s_θ = −ε̂/std (score_sde's continuous DDPM++/
NCSN++ models), so L = E w(t) ‖ε̂ − ε‖² with w = λ/std²:
    ``weighting: standard`` λ = std²  (w = 1; score_sde's default),
    ``weighting: likelihood`` λ = g²  (w = g²/std²; Song et al. 2021b, maximum-likelihood training).
The network may predict ε, x_0 or v (converted to ε̂).  Its noise input is ``noise_cond_scale·t``
(``noise_cond: time``; 999·t as DDPM++) or ``noise_cond_scale·log σ`` (``log_sigma``; NCSN++ with Fourier
features).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.models.base import DiffusionModule
from lit_diffusion.preconditioning import PredictionPreconditioning
from lit_diffusion.processes.sde import SDE

WEIGHTINGS = ("standard", "likelihood")
NOISE_CONDS = ("time", "log_sigma")


class ScoreSDE(DiffusionModule):
    """Continuous-time score model on a VP, sub-VP or VE SDE."""

    process: SDE

    def __init__(self, *args, prediction: str = "eps", weighting: str = "standard", noise_cond: str = "time",
                 noise_cond_scale: float = 999.0, **kwargs):
        super().__init__(*args, **kwargs)
        if weighting not in WEIGHTINGS:
            raise UserError(f"unknown model.weighting '{weighting}': choose one of {', '.join(WEIGHTINGS)}")
        if noise_cond not in NOISE_CONDS:
            raise UserError(f"unknown model.noise_cond '{noise_cond}': choose one of {', '.join(NOISE_CONDS)}")
        self.preconditioning = PredictionPreconditioning(prediction, self.process.scale, self.noise_input)
        self.save_hyperparameters(ignore=["run_config"])

    def noise_input(self, sigma: Tensor) -> Tensor:
        """The network's noise input: ``noise_cond_scale``·t (DDPM++) or ``noise_cond_scale``·log σ (NCSN++)."""
        level = self.process.t_from_sigma(sigma) if self.hparams.noise_cond == "time" else sigma.log()
        return self.hparams.noise_cond_scale * level

    def sample_sigma(self, batch: int) -> Tensor:
        t_min = self.process.t_min
        t = t_min + (1 - t_min) * torch.rand(batch, device=self.device, dtype=torch.float64)
        m, std = self.process.marginal(t)
        return std / m

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """w(t) on ‖ε̂ − ε‖² (1, or g²/std² for likelihood weighting), times (c_out/σ)² into network units."""
        c_out = self.preconditioning.coefficients(sigma)[1]
        weight = (c_out / sigma) ** 2
        if self.hparams.weighting == "likelihood":
            t = self.process.t_from_sigma(sigma)
            weight = weight * self.process.diffusion(t) ** 2 / self.process.marginal(t)[1] ** 2
        return weight
