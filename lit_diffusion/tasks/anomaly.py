"""AnoDDPM (Wyatt et al. 2022, "AnoDDPM: Anomaly Detection with Denoising Diffusion Probabilistic Models using
Simplex Noise"): anomaly detection by partial diffusion and reconstruction with a model of normal images.

An image x is diffused only to the level λ (not to the prior: AnoDDPM's λ = 250 of T = 1000 steps, here the
fraction 0.25 of the diffusion time) and the reverse process is run from there (AnoDDPM's Alg. 1, partial
diffusion): an anomalous region, destroyed by the noise, is rebuilt as normal tissue, while the rest of the
image keeps its structure.  That is SDEdit's path (:func:`lit_diffusion.tasks.sdedit.sdedit`) with the
forward noise ε and every reverse step's noise drawn from the model's noise distribution — AnoDDPM's
multi-scale simplex noise (:class:`lit_diffusion.noise.SimplexNoise`) or Gaussian noise — bound to the
per-image generators (:meth:`~lit_diffusion.noise.SimplexNoise.bind`).

The anomaly map is the per-pixel reconstruction error (AnoDDPM: the squared error (x − x̂)²; ``abs``:
|x − x̂|), averaged over channels and scaled to [0, 1] for data in [-1, 1]; an image's score aggregates its
map: the mean, the maximum, or the mean of its ``top_fraction`` largest values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.noise import GaussianNoise
from lit_diffusion.processes.base import DiffusionProcess
from lit_diffusion.sampling import SampleResult
from lit_diffusion.tasks.sdedit import sdedit

ERRORS = ("abs", "square")
AGGREGATES = ("mean", "max", "top")


def reconstruct(denoiser, process: DiffusionProcess, images: Tensor, sampler: Mapping[str, Any], generator=None, *,
                t0: float | None = None, sigma_start: float | None = None, noise=None) -> SampleResult:
    """x̂: ``images`` diffused to ``t0`` (a fraction of the diffusion time) or to the level ``sigma_start`` with
    ``noise`` (default Gaussian) and reconstructed by ``sampler``, whose steps draw the same noise."""
    return sdedit(denoiser, process, images, sampler, (noise or GaussianNoise()).bind(generator), t0=t0,
                  sigma_start=sigma_start)


def anomaly_map(images: Tensor, reconstructions: Tensor, error: str = "abs") -> Tensor:
    """(B, 1, H, W) in [0, 1]: |x − x̂|/2 (``abs``) or ((x − x̂)/2)² (``square``), mean over channels."""
    if error not in ERRORS:
        raise UserError(f"unknown anomaly error '{error}': choose one of {', '.join(ERRORS)}")
    difference = ((images - reconstructions) / 2).abs().clamp(max=1)
    return (difference if error == "abs" else difference**2).mean(1, keepdim=True)


def image_scores(maps: Tensor, aggregate: str = "mean", top_fraction: float = 0.01) -> Tensor:
    """One score per map: its mean, maximum, or the mean of its ``top_fraction`` largest pixels (``top``)."""
    if aggregate not in AGGREGATES:
        raise UserError(f"unknown score aggregate '{aggregate}': choose one of {', '.join(AGGREGATES)}")
    flat = maps.flatten(1)
    if aggregate == "mean":
        return flat.mean(1)
    if aggregate == "max":
        return flat.amax(1)
    if not 0 < top_fraction <= 1:
        raise UserError(f"top_fraction must lie in (0, 1], got {top_fraction}")
    count = max(1, round(top_fraction * flat.shape[1]))
    return flat.topk(count, dim=1).values.mean(1)
