"""SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential
Equations").

A guide y (a stroke painting, a blurred or quantised image …) is noised to the intermediate time t_0 and
the reverse process is run from there: x = y + σ(t_0) ε, then any sampler down the part of its σ grid at or
below σ(t_0) (:func:`lit_diffusion.sampling.generate` with ``init`` and ``sigma_start``).  Small t_0 keeps
the output faithful to the guide, large t_0 makes it realistic but unrelated; t_0 = 1 (σ_max) is
unconditional sampling.  The paper's t_0 ∈ [0.3, 0.6] on its VP/VE SDEs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.processes.base import DiffusionProcess
from lit_diffusion.processes.discrete_vp import DiscreteVP
from lit_diffusion.samplers.callback import StepCallback
from lit_diffusion.sampling import SampleResult, generate, truncate_grid
from lit_diffusion.tasks.common import sampler_grid


def sigma_at(process: DiffusionProcess, t0: float) -> float:
    """σ at the fraction ``t0`` ∈ (0, 1] of the diffusion time: DDPM's σ at step ⌈t0 T⌉ (0-based ⌈t0 T⌉ − 1),
    an SDE's σ(t0), and for EDM / NCSN ladders the σ(t0) of their VE SDE, σ_min (σ_max/σ_min)^t0."""
    if not 0 < t0 <= 1:
        raise UserError(f"SDEdit's t0 must lie in (0, 1] (a fraction of the diffusion time), got {t0}")
    if isinstance(process, DiscreteVP):
        index = min(max(int(torch.tensor(t0 * process.num_timesteps).ceil()) - 1, 0), process.num_timesteps - 1)
        return float(process.sigmas[index])
    to_sde = getattr(process, "as_sde", None)
    if to_sde is None:
        raise UserError(f"{type(process).__name__} has no diffusion time to place t0 on: give sigma_start instead")
    return float(to_sde().sigma(torch.tensor(t0, dtype=torch.float64)))


def sdedit(denoiser, process: DiffusionProcess, guide: Tensor, sampler: Mapping[str, Any], generator=None, *,
           t0: float | None = None, sigma_start: float | None = None, noise: Tensor | None = None,
           callback: StepCallback | None = None) -> SampleResult:
    """Edit ``guide`` (scaled coordinates, e.g. [-1, 1]): noise it to ``t0`` (a fraction of the diffusion
    time, :func:`sigma_at`) or directly to the level ``sigma_start`` and run ``sampler`` from there.

    The start is the highest level of the sampler's grid at or below that σ (reported by :func:`start_level`);
    the NFE is that of the remaining steps."""
    if (t0 is None) == (sigma_start is None):
        raise UserError("SDEdit needs exactly one of t0 (a fraction of the diffusion time) and sigma_start")
    sigma = sigma_at(process, t0) if t0 is not None else float(sigma_start)
    return generate(denoiser, process, tuple(guide.shape), sampler, generator, noise=noise, init=guide,
                    sigma_start=sigma, callback=callback)


def start_level(process: DiffusionProcess, sampler: Mapping[str, Any], t0: float | None = None,
                sigma_start: float | None = None) -> tuple[float, int]:
    """The σ SDEdit actually starts from with this sampler, and the number of steps it then takes."""
    sigma = sigma_at(process, t0) if t0 is not None else float(sigma_start)
    grid = truncate_grid(sampler_grid(process, sampler), sigma)
    return float(grid[0]), len(grid) - 1
