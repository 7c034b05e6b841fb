"""Forward processes: how data is noised, seen through the noise level σ."""

from lit_diffusion.processes.base import DiffusionProcess
from lit_diffusion.processes.discrete_vp import DiscreteVP, cosine_betas, linear_betas

__all__ = ["DiffusionProcess", "DiscreteVP", "cosine_betas", "linear_betas"]
