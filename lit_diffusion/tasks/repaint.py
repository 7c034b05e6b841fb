"""RePaint (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic Models").

Inpainting with an unconditional model.  Algorithm 1 in scaled coordinates x = x_0 + σ ε:

    x ~ prior at σ_0
    for each move of the schedule:
        down σ → σ':  x ← one sampler step (ancestral by default: the reverse chain of the model);
                      x ← m ⊙ (y + σ' ε) + (1 − m) ⊙ x          (the known region, re-noised from y)
        up σ → σ'':   x ← x + √(σ''² − σ²) z                     (the forward chain; "resampling")

with y the input image and m the mask (1 = known).  The down moves run the configured sampler on the
pieces of its σ grid between jumps (:func:`lit_diffusion.tasks.common.run_on_grid`) with the replacement as
its step callback; an up move of j levels is the j forward steps at once (a sum of independent Gaussians,
the VE chain of :mod:`lit_diffusion.samplers.ancestral`).  The schedule is the official one
(``get_schedule_jump`` of the RePaint code, one sample per level): going down the T levels of the sampler's
(respaced) grid, at every level t that is a multiple of the jump length j below T − j, jump back up j levels,
r − 1 times.  r = 1 is plain replacement (Song et al. 2021's inpainting).  The paper's setting is T = 250
(``sampler.steps=250``), j = 10, r = 10.  The last move lands on σ = 0, where the known region is y itself:
the output equals the input there exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.processes.base import DiffusionProcess
from lit_diffusion.randomness import randn, randn_like
from lit_diffusion.samplers.callback import StepCallback
from lit_diffusion.sampling import SampleResult
from lit_diffusion.tasks.common import chain, run_on_grid, sampler_grid


def jump_schedule(steps: int, jump_length: int = 10, resamplings: int = 10) -> list[int]:
    """The levels RePaint visits, as indices into a σ grid of ``steps`` levels plus the final 0 (index 0 is
    the noisiest level, ``steps`` is σ = 0): the official ``get_schedule_jump(t_T=steps, n_sample=1,
    jump_length, jump_n_sample=resamplings)`` with timestep t mapped to index steps − 1 − t."""
    if steps < 1 or jump_length < 1 or resamplings < 1:
        raise UserError(f"RePaint needs steps, jump_length and resamplings >= 1, got {steps}, {jump_length}, "
                        f"{resamplings}")
    jumps = {t: resamplings - 1 for t in range(0, steps - jump_length, jump_length)}
    t, times = steps, []
    while t >= 1:
        t -= 1
        times.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                times.append(t)
    times.append(-1)
    return [steps - 1 - t for t in times]


def repaint(
    denoiser,
    process: DiffusionProcess,
    image: Tensor,
    mask: Tensor,
    sampler: Mapping[str, Any],
    generator=None,
    *,
    jump_length: int = 10,
    resamplings: int = 10,
    noise: Tensor | None = None,
    callback: StepCallback | None = None,
) -> SampleResult:
    """Inpaint ``image`` where ``mask`` is 0 (``mask`` broadcasts against ``image``; 1 = known).

    Args:
        denoiser: D(x, σ) of an unconditional model (e.g. ``lambda x, s: model.sampling_denoiser(x, s, {})``).
        image: the input y in scaled coordinates (e.g. [-1, 1]); only its known pixels are read.
        sampler: a sampler config (default algorithm of the paper: ``ancestral``); its grid is RePaint's T levels.
        generator: per-image generators (:class:`~lit_diffusion.randomness.PerImageGenerator`) or one
            ``torch.Generator``: the chain, the known-region noise and the jumps all draw from it.
        noise: the standard-normal start (default: drawn from ``generator``).
        callback: called after every down step with the replaced state (e.g. a progress bar).

    Returns the inpainted images and the NFE per image (the schedule's down moves, times the sampler's NFE
    per step).
    """
    mask = mask.to(image.dtype)
    sigmas = sampler_grid(process, sampler)
    levels = jump_schedule(len(sigmas) - 1, jump_length, resamplings)

    def replace(step: int, sigma: float, x: Tensor, denoised: Tensor) -> Tensor:
        known = image + sigma * randn_like(x, generator) if sigma > 0 else image
        return mask * known + (1 - mask) * x

    step_callback = chain(replace, callback)
    if noise is None:
        noise = randn(image.shape, generator, image.device)
    x = float(process.start_std(float(sigmas[0]))) * noise
    nfe, start = 0, 0
    for end in range(1, len(levels) + 1):  # runs of consecutive down (or up) moves
        if end < len(levels) and (levels[end] > levels[end - 1]) == (levels[start + 1] > levels[start]):
            continue
        first, last = levels[start], levels[end - 1]
        if last > first:  # down: the sampler over this piece of its grid, the known region replaced
            result = run_on_grid(denoiser, process, x, sigmas[first:last + 1], sampler, generator, step_callback)
            x, nfe = result.images, nfe + result.nfe
        else:  # up: the forward chain from σ_first to σ_last
            up = (float(sigmas[last]) ** 2 - float(sigmas[first]) ** 2) ** 0.5
            x = x + up * randn_like(x, generator)
        start = end - 1
    return SampleResult(x, nfe)


def down_moves(steps: int, jump_length: int = 10, resamplings: int = 10) -> int:
    """How many sampler steps RePaint's schedule takes: its NFE with a one-NFE-per-step sampler, and the
    grid size T' at which plain replacement (r = 1) costs the same (the paper's ablation at equal NFE)."""
    levels = jump_schedule(steps, jump_length, resamplings)
    return sum(b > a for a, b in zip(levels[:-1], levels[1:]))
