"""Improved DDPM (Nichol & Dhariwal 2021; survey §3): learned reverse variances and the hybrid objective.

The network outputs 2C channels: the usual ε / x_0 / v prediction and, per element, the variance
interpolation v = (out + 1)/2 of log Σ_θ = v log β_t + (1 − v) log β̃_t (Eq. 15), an extra output of the
shared denoiser path (:class:`~lit_diffusion.models.base.Prediction`).  Training minimises

    L_hybrid = L_simple + λ L_vlb,   λ = 0.001   (Eq. 16, §3.1),

where L_vlb (:mod:`lit_diffusion.vlb`) sees the predicted mean through a stop-gradient, so it only trains
the variance; ``objective: vlb`` trains everything on L_vlb alone (the paper's best-likelihood models).
With a uniformly drawn t, T·L_t is an unbiased estimate of L_vlb in bits per dimension.  Ancestral sampling
with ``variance: learned`` uses v, on the full chain or respaced to fewer steps (§4).
"""

from __future__ import annotations

from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.models.ddpm import DDPM
from lit_diffusion.processes.base import expand_like
from lit_diffusion.vlb import vlb_terms

OBJECTIVES = ("hybrid", "vlb")


class IDDPM(DDPM):
    """DDPM with learned variances.

    Args:
        objective: ``hybrid`` (L_simple + λ L_vlb, stop-gradient on the mean in L_vlb) or ``vlb``.
        vlb_weight: λ of the hybrid objective (0.001 in the paper).
        Others: see :class:`~lit_diffusion.models.ddpm.DDPM`; the network must output twice the data's
        channels (``network.out_channels``).
    """

    variance_head = True

    def __init__(self, *args, objective: str = "hybrid", vlb_weight: float = 0.001, **kwargs):
        super().__init__(*args, **kwargs)
        if objective not in OBJECTIVES:
            raise UserError(f"unknown iDDPM objective '{objective}': choose one of {', '.join(OBJECTIVES)}")
        self.objective = objective
        self.vlb_weight = vlb_weight
        self.save_hyperparameters(ignore=["run_config"])

    def loss(self, x0: Tensor, cond=None) -> Tensor:
        sigma, _, x = self.noisy(x0)
        prediction = self.predict(x, sigma, cond)
        c_skip, c_out, _, _ = self.preconditioning.coefficients(sigma)
        mean = prediction.raw.detach() if self.objective == "hybrid" else prediction.raw
        x0_hat = expand_like(c_skip, x) * x + expand_like(c_out, x) * mean
        t = self.process.sigma_to_t(sigma).round().long()
        xt = expand_like(self.process.scale(sigma), x) * x
        vlb = self.process.num_timesteps * vlb_terms(self.process, x0, xt, t, x0_hat, prediction.variance).mean()
        if self.objective == "vlb":
            return vlb
        return self.regression_loss(prediction, x0, x, sigma) + self.vlb_weight * vlb
