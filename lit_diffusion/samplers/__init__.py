"""Samplers: one plain function per algorithm, each working on a denoiser D(x, σ) over a σ grid.

Signature: ``fn(denoiser, x, sigmas, *, process, generator, **options) -> x_0``, where ``x`` is drawn
from the process's prior in scaled coordinates and ``sigmas`` decreases to a final 0.  Conditioning and
guidance are bound into the denoiser by the caller, so samplers never see them.
"""

from lit_diffusion.samplers.ancestral import sample_ancestral
from lit_diffusion.samplers.ddim import sample_ddim
from lit_diffusion.samplers.dpm_solver import sample_dpm_solver
from lit_diffusion.samplers.euler_maruyama import sample_euler_maruyama
from lit_diffusion.samplers.heun import sample_euler, sample_heun
from lit_diffusion.samplers.langevin import sample_langevin
from lit_diffusion.samplers.ode import sample_ode
from lit_diffusion.samplers.predictor_corrector import sample_pc

ALGORITHMS = {
    "ancestral": sample_ancestral,
    "ddim": sample_ddim,
    "langevin": sample_langevin,
    "euler_maruyama": sample_euler_maruyama,
    "pc": sample_pc,
    "ode": sample_ode,
    "heun": sample_heun,
    "euler": sample_euler,
    "dpm_solver": sample_dpm_solver,
}

__all__ = ["ALGORITHMS", "sample_ancestral", "sample_ddim", "sample_dpm_solver", "sample_euler",
           "sample_euler_maruyama", "sample_heun", "sample_langevin", "sample_ode", "sample_pc"]
