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
from lit_diffusion.parameterizations import check_prediction, predict_eps
from lit_diffusion.processes.base import expand_like
from lit_diffusion.processes.sde import SDE

WEIGHTINGS = ("standard", "likelihood")
NOISE_CONDS = ("time", "log_sigma")


class ScoreSDE(DiffusionModule):
    """Continuous-time score model on a VP, sub-VP or VE SDE."""

    process: SDE

    def __init__(self, *args, prediction: str = "eps", weighting: str = "standard", noise_cond: str = "time",
                 noise_cond_scale: float = 999.0, **kwargs):
        super().__init__(*args, **kwargs)
        check_prediction(prediction)
        if weighting not in WEIGHTINGS:
            raise UserError(f"unknown model.weighting '{weighting}': choose one of {', '.join(WEIGHTINGS)}")
        if noise_cond not in NOISE_CONDS:
            raise UserError(f"unknown model.noise_cond '{noise_cond}': choose one of {', '.join(NOISE_CONDS)}")
        self.save_hyperparameters(ignore=["run_config"])

    def _eps(self, xt: Tensor, t: Tensor, class_labels: Tensor | None) -> Tensor:
        """ε̂(x_t, t) in SDE coordinates."""
        m, std = self.process.marginal(t)
        if self.hparams.noise_cond == "time":
            cond = self.hparams.noise_cond_scale * t
        else:
            cond = self.hparams.noise_cond_scale * torch.log(std / m)
        pred = self.network(xt, cond.to(xt.dtype), class_labels)
        return predict_eps(self.hparams.prediction, pred, xt, expand_like(m, xt), expand_like(std, xt))

    def loss(self, x0: Tensor, class_labels: Tensor | None = None) -> Tensor:
        t_min = self.process.t_min
        t = t_min + (1 - t_min) * torch.rand(x0.shape[0], device=x0.device, dtype=torch.float64)
        m, std = self.process.marginal(t)
        eps = torch.randn_like(x0)
        xt = expand_like(m, x0) * x0 + expand_like(std, x0) * eps
        err = ((self._eps(xt, t, class_labels) - eps) ** 2).flatten(1).mean(1)
        if self.hparams.weighting == "likelihood":
            err = err * (self.process.diffusion(t) ** 2 / std**2).to(err.dtype)
        return err.mean()

    def denoise(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
        t = self.process.t_from_sigma(sigma.to(torch.float64))
        m = expand_like(self.process.mean_coef(t), x)
        return x - expand_like(sigma, x) * self._eps(m * x, t, class_labels)
