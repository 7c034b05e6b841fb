"""What the tasks share: running a configured sampler from a given state over a given σ grid.

:func:`lit_diffusion.sampling.generate` runs a sampler config down the process's own σ grid, from noise or
from a noised image.  RePaint's down moves between jumps and DDIB's encoding (up the grid) need the same
algorithm on a piece of a grid, from the current state: :func:`run_on_grid` hands ``generate`` that piece of
grid, and the state as ``init`` with zero noise, so the sampler maths stay in
:mod:`lit_diffusion.samplers` and the NFE is counted as everywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
import torch
from torch import Tensor

from lit_diffusion.processes.base import DiffusionProcess
from lit_diffusion.samplers.callback import StepCallback
from lit_diffusion.sampling import SampleResult, generate, sigma_grid


def sampler_grid(process: DiffusionProcess, sampler: Mapping[str, Any]) -> Tensor:
    """The σ grid (decreasing, final 0) that ``sampler`` walks on ``process``."""
    return sigma_grid(process, sampler.get("steps"), sampler.get("grid"))


def run_on_grid(denoiser, process: DiffusionProcess, x: Tensor, sigmas: Tensor, sampler: Mapping[str, Any],
                generator=None, callback: StepCallback | None = None) -> SampleResult:
    """Run ``sampler``'s algorithm (its other options kept) from the state ``x`` at ``sigmas[0]`` over
    ``sigmas``, which may be any piece of a grid, decreasing or (for deterministic steps) increasing."""
    return generate(denoiser, process, tuple(x.shape), sampler, generator, sigmas=sigmas, noise=torch.zeros_like(x),
                    init=x, sigma_start=float(sigmas.max()), callback=callback)


def chain(*callbacks: StepCallback | None) -> StepCallback | None:
    """One step callback running ``callbacks`` in order, each on the state the previous one returned."""
    active = [c for c in callbacks if c is not None]
    if not active:
        return None

    def run(step: int, sigma: float, x: Tensor, denoised: Tensor):
        replaced = None
        for callback in active:
            out = callback(step, sigma, x, denoised)
            if out is not None:
                x = replaced = out
        return replaced

    return run
