"""Forward processes: how data is noised, seen through the noise level σ."""

from lit_diffusion.processes.base import DiffusionProcess
from lit_diffusion.processes.edm import EDMProcess
from lit_diffusion.processes.discrete_vp import DiscreteVP, cosine_betas, linear_betas
from lit_diffusion.processes.sde import SDE, VESDE, VPSDE, SubVPSDE
from lit_diffusion.processes.ve_ladder import VELadder

__all__ = ["SDE", "VESDE", "VPSDE", "DiffusionProcess", "DiscreteVP", "EDMProcess", "SubVPSDE", "VELadder", "cosine_betas",
           "linear_betas"]
