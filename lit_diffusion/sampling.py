"""From a denoiser and a sampler config to images: the one place where a sampler is set up and run.

A sampler config (Hydra group ``sampler``) names an algorithm of :data:`lit_diffusion.samplers.ALGORITHMS`,
the number of steps and options of the σ grid; every other key is passed to the algorithm::

    {algorithm: ddim, steps: 50, grid: {spacing: leading}, eta: 0.0}

A denoiser is called as ``D(x, σ)`` → x̂_0; a model that learns its reverse variance (iDDPM) answers
(x̂_0, v), v ∈ [0, 1] interpolating the step's log-variance between the posterior (v = 0) and forward (v = 1)
variances (Nichol & Dhariwal 2021, Eq. 15).  Only algorithms with a ``variance`` option (ancestral) see v;
the others get x̂_0.  Clipping x̂_0 to the data range is the model's business, not the sampler's.

Sampling may start from an image (SDEdit, Meng et al. 2022): ``init`` is noised to ``sigma_start`` and the
σ grid is cut to the levels at or below it.  ``callback(i, σ, x, x̂_0)`` runs after every step
(:mod:`lit_diffusion.samplers.callback`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.processes.base import DiffusionProcess
from lit_diffusion.randomness import randn
from lit_diffusion.samplers import ALGORITHMS
from lit_diffusion.samplers.callback import StepCallback

Denoiser = Callable[[Tensor, Tensor], Any]
RESERVED = {"denoiser", "x", "sigmas", "process", "generator", "callback"}


class CountingDenoiser:
    """Wrap a denoiser to count its network function evaluations (NFE); hands a learned variance on only to
    algorithms that use it."""

    def __init__(self, denoiser: Denoiser, keep_variance: bool):
        self.denoiser, self.keep_variance = denoiser, keep_variance
        self.nfe = 0

    def __call__(self, x: Tensor, sigma: Tensor):
        self.nfe += 1
        out = self.denoiser(x, sigma)
        return out if self.keep_variance or not isinstance(out, tuple) else out[0]


@dataclass
class SampleResult:
    images: Tensor
    nfe: int


def generate(
    denoiser: Denoiser,
    process: DiffusionProcess,
    shape: tuple[int, ...],
    sampler: Mapping[str, Any],
    generator=None,
    *,
    sigmas: Tensor | None = None,
    noise: Tensor | None = None,
    init: Tensor | None = None,
    sigma_start: float | None = None,
    callback: StepCallback | None = None,
) -> SampleResult:
    """Draw ``shape[0]`` samples with the configured algorithm down the σ grid.

    Args:
        generator: a :class:`~lit_diffusion.randomness.PerImageGenerator`, one ``torch.Generator`` or None.
        sigmas: a σ grid to walk instead of the config's ``steps``/``grid`` (any piece of a grid, decreasing, or
            increasing for deterministic steps: RePaint's resampling, DDIB's encoding).
        noise: the standard-normal start (default: drawn from ``generator``).
        init: clean images to start from (scaled coordinates, e.g. [-1, 1]); needs ``sigma_start``.
        sigma_start: cut the grid to σ ≤ ``sigma_start`` (with ``init``: SDEdit; without: a partial chain).
        callback: ``callback(i, σ, x, x̂_0)`` after every step; a returned tensor replaces x.
    """
    options = dict(sampler)
    name = options.pop("algorithm", None)
    if name not in ALGORITHMS:
        raise UserError(f"unknown sampler algorithm '{name}': choose one of {', '.join(sorted(ALGORITHMS))}")
    steps, grid = options.pop("steps", None), options.pop("grid", None)
    if sigmas is None:
        sigmas = sigma_grid(process, steps, grid)
    if sigma_start is not None:
        sigmas = truncate_grid(sigmas, sigma_start)
    elif init is not None:
        raise UserError("sampling from an image needs the noise level to start at: pass sigma_start")
    algorithm = ALGORITHMS[name]
    _check_options(algorithm, options, f"sampler '{name}'", RESERVED)
    counted = CountingDenoiser(denoiser, keep_variance="variance" in inspect.signature(algorithm).parameters)
    device = process.device() if init is None else init.device
    if noise is None:
        noise = randn(shape, generator, device)
    sigma0 = float(sigmas[0])
    x = init + sigma0 * noise if init is not None else process.start_std(sigma0) * noise
    images = algorithm(counted, x, sigmas, process=process, generator=generator, callback=callback, **options)
    return SampleResult(images, counted.nfe)


def truncate_grid(sigmas: Tensor, sigma_start: float) -> Tensor:
    """The levels of a σ grid at or below ``sigma_start`` (the final 0 kept)."""
    kept = sigmas[sigmas <= sigma_start * (1 + 1e-9)]
    if len(kept) < 2:
        raise UserError(f"sigma_start={sigma_start} is below every level of the sampler's σ grid "
                        f"({float(sigmas[-2]):.4g} … {float(sigmas[0]):.4g}); raise it or use more steps")
    return kept


def resolve_sampler(stored: Mapping[str, Any], requested: Mapping[str, Any] | None) -> dict:
    """The model's sampler, or the requested one; without ``algorithm`` the requested non-null keys override
    the stored ones (``sampler.steps=20`` keeps the model's algorithm)."""
    requested = dict(requested or {})
    if requested.get("algorithm") is None:
        return {**stored, **{k: v for k, v in requested.items() if v is not None and k != "algorithm"}}
    return requested


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
