"""DDIB (Su et al. 2023, "Dual Diffusion Implicit Bridges for Image-to-Image Translation").

Translation between two separately trained models through their probability-flow ODEs: encode a source
image into its latent with the source model's ODE (data → noise), decode that latent with the target
model's ODE (noise → data).  With the same model on both sides the round trip returns the input, up to the
ODE solver's error.

Both directions run a deterministic sampler of the project (``ddim`` with η = 0, i.e. Euler on the PF-ODE
in σ, ``euler`` or ``heun`` with no churn) on the sampler's σ grid: decoding is
:func:`lit_diffusion.sampling.generate` from the latent; encoding runs the same algorithm up the reversed
grid (:func:`lit_diffusion.tasks.common.run_on_grid`), i.e. DDIM inversion (DDIM with η = 0 runs as the
identical Euler step, whose formula also holds for σ' > σ).  Its first step, from σ = 0 to
the grid's lowest level σ_1, inverts the decoder's last step x_0 = D(x_{σ_1}, σ_1) to first order:
x_{σ_1} = x_0 + (x_0 − D(x_0, σ_1)) (one NFE), so the round trip error vanishes as the grid gets finer.
The latent is expressed in the prior's units (x_{σ_0} / the process's start std at σ_0), which is what
``generate`` scales noise by, so two models with different processes share it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.processes.base import DiffusionProcess
from lit_diffusion.sampling import SampleResult, generate
from lit_diffusion.tasks.common import run_on_grid, sampler_grid

DETERMINISTIC = ("ddim", "euler", "heun")


def check_deterministic(sampler: Mapping[str, Any]) -> None:
    """A :class:`UserError` unless ``sampler`` is an ODE solver with fixed steps that can run both ways."""
    name = sampler.get("algorithm")
    if name not in DETERMINISTIC:
        raise UserError(f"DDIB integrates the probability-flow ODE both ways and needs a deterministic fixed-step "
                        f"sampler: sampler=ddim (eta 0), euler or heun, not {name!r}")
    if name == "ddim" and float(sampler.get("eta", 0.0)) != 0.0:
        raise UserError(f"DDIB needs the deterministic DDIM: sampler.eta=0 (got {sampler['eta']})")
    if float(sampler.get("s_churn", 0.0)) != 0.0:
        raise UserError(f"DDIB needs the deterministic {name}: sampler.s_churn=0 (got {sampler['s_churn']})")


@torch.no_grad()
def encode(denoiser, process: DiffusionProcess, images: Tensor, sampler: Mapping[str, Any]) -> SampleResult:
    """Latents (in prior units, as ``generate``'s ``noise``) of ``images`` under the PF-ODE of ``denoiser``."""
    check_deterministic(sampler)
    sigmas = sampler_grid(process, sampler)
    up = sigmas[:-1].flip(0)  # σ_1 (lowest) … σ_0 (the start of sampling)
    lowest = float(up[0])
    x = 2 * images - denoiser(images, images.new_full((images.shape[0],), lowest))
    nfe = 1
    if len(up) > 1:
        # DDIM with η = 0 is Euler's method in σ (Karras et al. 2022, §3); the Euler sampler also runs upwards
        upward = {"algorithm": "euler"} if sampler["algorithm"] == "ddim" else sampler
        result = run_on_grid(denoiser, process, x, up, upward)
        x, nfe = result.images, nfe + result.nfe
    return SampleResult(x / float(process.start_std(float(sigmas[0]))), nfe)


@torch.no_grad()
def decode(denoiser, process: DiffusionProcess, latents: Tensor, sampler: Mapping[str, Any]) -> SampleResult:
    """Images of ``latents`` (prior units) under the PF-ODE of ``denoiser``: plain sampling from that noise."""
    check_deterministic(sampler)
    return generate(denoiser, process, tuple(latents.shape), sampler, noise=latents)


@dataclass
class Translation:
    images: Tensor
    latents: Tensor
    nfe: int
    """Encoding plus decoding, per image."""


def ddib(source, source_process: DiffusionProcess, target, target_process: DiffusionProcess, images: Tensor,
         sampler: Mapping[str, Any], target_sampler: Mapping[str, Any] | None = None) -> Translation:
    """Translate ``images`` from the source model's domain to the target's: encode with ``source`` (a
    denoiser D(x, σ)) on ``source_process``, decode with ``target`` on ``target_process``.  ``sampler`` is the
    ODE solver of both unless ``target_sampler`` is given."""
    encoded = encode(source, source_process, images, sampler)
    decoded = decode(target, target_process, encoded.images, target_sampler or sampler)
    return Translation(decoded.images, encoded.images, encoded.nfe + decoded.nfe)
