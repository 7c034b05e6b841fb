"""Improved DDPM (Nichol & Dhariwal 2021; survey §3): learned reverse variances and the hybrid objective.

The network outputs 2C channels: the usual ε / x_0 / v prediction and, per element, the variance
interpolation v = (out + 1)/2 of log Σ_θ = v log β_t + (1 − v) log β̃_t (Eq. 15).  Training minimises

    L_hybrid = L_simple + λ L_vlb,   λ = 0.001   (Eq. 16, §3.1),

where L_vlb (:mod:`lit_diffusion.vlb`) sees the predicted mean through a stop-gradient, so it only trains
the variance; ``objective: vlb`` trains everything on L_vlb alone (the paper's best-likelihood models).
With a uniformly drawn t, T·L_t is an unbiased estimate of L_vlb in bits per dimension.  Samplers get
(x̂_0, v) from :meth:`IDDPM.denoise_with_variance`; ancestral sampling with ``variance: learned`` uses it,
on the full chain or respaced to fewer steps (§4).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.models.ddpm import DDPM
from lit_diffusion.parameterizations import predict_x0, training_target
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

    def __init__(self, *args, objective: str = "hybrid", vlb_weight: float = 0.001, **kwargs):
        super().__init__(*args, **kwargs)
        if objective not in OBJECTIVES:
            raise UserError(f"unknown iDDPM objective '{objective}': choose one of {', '.join(OBJECTIVES)}")
        channels = self.image_shape[0]
        out_channels = getattr(self.network, "out_channels", None)
        if out_channels != 2 * channels:
            raise UserError(f"model=iddpm learns a variance per pixel, so its network needs out_channels = 2 × "
                            f"{channels} data channels = {2 * channels}, got {out_channels}; set "
                            f"network.out_channels={2 * channels}")
        self.objective = objective
        self.vlb_weight = vlb_weight
        self.save_hyperparameters(ignore=["run_config"])

    def _network(self, xt: Tensor, t: Tensor, class_labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """The mean prediction and v = (out + 1)/2 (unclamped, as in the reference code)."""
        pred, var = self.network(xt, t, class_labels).chunk(2, dim=1)
        return pred, (var + 1) / 2

    def loss(self, x0: Tensor, class_labels: Tensor | None = None) -> Tensor:
        T = self.process.num_timesteps
        t = torch.randint(0, T, (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        a, b = (expand_like(c, x0) for c in self.process.marginal(t))
        xt = a * x0 + b * eps
        pred, v = self._network(xt, t.to(x0.dtype), class_labels)
        mean_pred = pred.detach() if self.objective == "hybrid" else pred
        vlb = T * vlb_terms(self.process, x0, xt, t, predict_x0(self.prediction, mean_pred, xt, a, b), v).mean()
        if self.objective == "vlb":
            return vlb
        return torch.mean((pred - training_target(self.prediction, x0, eps, a, b)) ** 2) + self.vlb_weight * vlb

    def denoise_with_variance(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        xt, t, a, b = self.to_chain(x, sigma)
        pred, v = self._network(xt, t, class_labels)
        return predict_x0(self.prediction, pred, xt, a, b), v

    def denoise(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
        return self.denoise_with_variance(x, sigma, class_labels)[0]
