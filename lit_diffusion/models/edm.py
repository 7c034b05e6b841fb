"""EDM (Karras et al. 2022): a preconditioned denoiser trained directly on ‖D_θ(y + n, σ) − y‖².

The preconditioning (c_skip, c_out, c_in, c_noise) and the objective (σ distribution, λ(σ)) are small
swappable parts from :mod:`lit_diffusion.preconditioning`; EDM's own pair, or the VP/VE pairs that recast
DDPM++ and NCSN++ in EDM's form.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_diffusion.config import safe_instantiate
from lit_diffusion.models.base import DiffusionModule
from lit_diffusion.processes.base import expand_like


class EDM(DiffusionModule):
    """Preconditioned denoiser D_θ(x, σ) = c_skip x + c_out F_θ(c_in x, c_noise) (Karras et al., Eq. 7).

    Args:
        preconditioning: config of the preconditioning (e.g. ``lit_diffusion.preconditioning.EDMPreconditioning``).
        objective: config of the matched training objective (``...EDMObjective``: σ distribution and λ(σ)).
        Others: see :class:`~lit_diffusion.models.base.DiffusionModule`.
    """

    def __init__(self, *args, preconditioning: dict, objective: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.preconditioning = safe_instantiate(preconditioning)
        self.objective = safe_instantiate(objective)
        self.save_hyperparameters(ignore=["run_config"])

    def denoise(self, x: Tensor, sigma: Tensor, class_labels: Tensor | None = None) -> Tensor:
        sigma64 = sigma.to(torch.float64)
        c_skip, c_out, c_in, c_noise = self.preconditioning.coefficients(sigma64)
        out = self.network(expand_like(c_in, x) * x, c_noise.to(x.dtype), class_labels)
        return expand_like(c_skip, x) * x + expand_like(c_out, x) * out.to(x.dtype)

    def loss(self, x0: Tensor, class_labels: Tensor | None = None) -> Tensor:
        sigma = self.objective.sample_sigma(x0.shape[0], x0.device)
        noisy = x0 + expand_like(sigma, x0) * torch.randn_like(x0)
        err = ((self.denoise(noisy, sigma, class_labels) - x0) ** 2).flatten(1).mean(1)
        return (self.objective.weight(sigma).to(err.dtype) * err).mean()
