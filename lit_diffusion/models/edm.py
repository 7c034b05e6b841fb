"""EDM (Karras et al. 2022): a preconditioned denoiser trained directly on ‖D_θ(y + n, σ) − y‖².

The preconditioning (c_skip, c_out, c_in, c_noise) and the objective (σ distribution, λ(σ)) are small
swappable parts from :mod:`lit_diffusion.preconditioning`; EDM's own pair, or the VP/VE pairs that recast
DDPM++ and NCSN++ in EDM's form.
"""

from __future__ import annotations

from torch import Tensor

from lit_diffusion.config import safe_instantiate
from lit_diffusion.models.base import DiffusionModule


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

    def sample_sigma(self, batch: int) -> Tensor:
        return self.objective.sample_sigma(batch, self.device)

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """λ(σ) c_out(σ)²: EDM's λ ‖D − y‖² in the network's units."""
        return self.objective.weight(sigma) * self.preconditioning.coefficients(sigma)[1] ** 2
