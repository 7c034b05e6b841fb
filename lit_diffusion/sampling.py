"""From a denoiser and a sampler config to images: the one place where a sampler is set up and run.

A sampler config (Hydra group ``sampler``) names an algorithm of :data:`lit_diffusion.samplers.ALGORITHMS`,
the number of steps and options of the σ grid; every other key is passed to the algorithm::

    {algorithm: ddim, steps: 50, grid: {spacing: leading}, eta: 0.0, clip_denoised: true}

A denoiser is called as ``D(x, σ)`` → x̂_0.  Models that learn the reverse variance (iDDPM) also answer
``D(x, σ, return_variance=True)`` → (x̂_0, v), v ∈ [0, 1] interpolating the step's log-variance between the
posterior (v = 0) and forward (v = 1) variances (Nichol & Dhariwal 2021, Eq. 15); ancestral sampling with
``variance: learned`` uses it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.processes.base import DiffusionProcess
from lit_diffusion.samplers import ALGORITHMS

Denoiser = Callable[[Tensor, Tensor], Tensor]


class CountingDenoiser:
    """Wrap a denoiser to count its network function evaluations (NFE) and report progress."""

    def __init__(self, denoiser: Denoiser, clip_denoised: bool = False, on_call: Callable[[], None] | None = None):
        self.denoiser = denoiser
        self.clip_denoised = clip_denoised
        self.on_call = on_call
        self.nfe = 0

    def __call__(self, x: Tensor, sigma: Tensor, return_variance: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        self.nfe += 1
        out = self.denoiser(x, sigma, return_variance=True) if return_variance else self.denoiser(x, sigma)
        if self.on_call is not None:
            self.on_call()
        if not self.clip_denoised:
            return out
        return (out[0].clamp(-1, 1), out[1]) if return_variance else out.clamp(-1, 1)


@dataclass
class SampleResult:
    images: Tensor
    nfe: int


def generate(
    denoiser: Denoiser,
    process: DiffusionProcess,
    shape: tuple[int, ...],
    sampler: Mapping[str, Any],
    generator: torch.Generator | None = None,
    on_call: Callable[[], None] | None = None,
) -> SampleResult:
    """Draw ``shape[0]`` samples: x_T from the prior, then the configured algorithm down the σ grid."""
    options = dict(sampler)
    name = options.pop("algorithm", None)
    if name not in ALGORITHMS:
        raise UserError(f"unknown sampler algorithm '{name}': choose one of {', '.join(sorted(ALGORITHMS))}")
    sigmas = sigma_grid(process, options.pop("steps", None), options.pop("grid", None))
    counted = CountingDenoiser(denoiser, options.pop("clip_denoised", False), on_call)
    x = process.prior_sample(shape, generator=generator)
    algorithm = ALGORITHMS[name]
    _check_options(algorithm, options, f"sampler '{name}'", {"denoiser", "x", "sigmas", "process", "generator"})
    images = algorithm(counted, x, sigmas, process=process, generator=generator, **options)
    return SampleResult(images, counted.nfe)


def _check_options(fn: Callable, options: Mapping[str, Any], what: str, reserved: set[str]) -> None:
    accepted = set(inspect.signature(fn).parameters) - reserved
    if unknown := sorted(set(options) - accepted):
        raise UserError(f"{what} has no option {unknown}; its options are {sorted(accepted)}")


def sigma_grid(process: DiffusionProcess, steps: int | None, grid: Mapping[str, Any] | None) -> Tensor:
    """The process's σ grid for ``steps`` with the config's grid options (checked against the process)."""
    grid = dict(grid or {})
    _check_options(process.sigma_grid, grid, f"the σ grid of {type(process).__name__} (sampler.grid)", {"steps"})
    return process.sigma_grid(steps, **grid)


def num_sampler_steps(process: DiffusionProcess, sampler: Mapping[str, Any]) -> int:
    """Number of σ-grid intervals a sampler config walks (for progress bars)."""
    return len(sigma_grid(process, sampler.get("steps"), sampler.get("grid"))) - 1
