"""ILVR (Choi et al. 2021, "ILVR: Conditioning Method for Denoising Diffusion Probabilistic Models").

Sampling guided by a reference image y through its low frequencies: after every step to σ' (Algorithm 1)

    x ← x − φ_N(x) + φ_N(y + σ' ε),

with φ_N a linear low-pass filter: downsampling by N and upsampling back (the paper's bicubic ``Resizer``;
``filter="box"`` gives block means, an orthogonal projection, for which φ_N(output) = φ_N(y) exactly).  The
refinement is a step callback of any sampler; at σ' = 0 the reference is y itself, so N = 1 (φ = identity)
returns y.  ``stop_sigma`` refines only while σ' ≥ it (the paper's conditioning range, Fig. 6).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.processes.base import DiffusionProcess
from lit_diffusion.randomness import randn_like
from lit_diffusion.samplers.callback import StepCallback
from lit_diffusion.sampling import SampleResult, generate
from lit_diffusion.tasks.common import chain

FILTERS = ("bicubic", "box")


def low_pass(x: Tensor, factor: int, filter: str = "bicubic") -> Tensor:
    """φ_N: (B, C, H, W) → downsampled by ``factor`` and upsampled back (bicubic, antialiased down, no clamp:
    x may be noisy; or ``box``: block means, repeated).  ``factor = 1`` is the identity."""
    if filter not in FILTERS:
        raise UserError(f"ILVR filter must be one of {', '.join(FILTERS)}, got {filter!r}")
    height, width = x.shape[-2:]
    if not isinstance(factor, int) or factor < 1 or height % factor or width % factor:
        raise UserError(f"ILVR's downsampling factor N={factor!r} must be a positive integer dividing the image "
                        f"size {height}x{width}")
    if factor == 1:
        return x
    small = (height // factor, width // factor)
    if filter == "box":
        return F.interpolate(F.avg_pool2d(x, factor), scale_factor=factor, mode="nearest")
    down = F.interpolate(x, size=small, mode="bicubic", antialias=True, align_corners=False)
    return F.interpolate(down, size=(height, width), mode="bicubic", align_corners=False)


def ilvr(denoiser, process: DiffusionProcess, reference: Tensor, sampler: Mapping[str, Any], generator=None, *,
         factor: int = 4, filter: str = "bicubic", stop_sigma: float = 0.0, noise: Tensor | None = None,
         callback: StepCallback | None = None) -> SampleResult:
    """Sample images whose low frequencies (φ_N, N = ``factor``) follow ``reference`` (B, C, H, W)."""
    low_pass(reference, factor, filter)  # checks factor and filter before sampling

    def refine(step: int, sigma: float, x: Tensor, denoised: Tensor) -> Tensor | None:
        if sigma < stop_sigma:
            return None
        noisy = reference + sigma * randn_like(x, generator) if sigma > 0 else reference
        return x - low_pass(x, factor, filter) + low_pass(noisy, factor, filter)

    return generate(denoiser, process, tuple(reference.shape), sampler, generator, noise=noise,
                    callback=chain(refine, callback))
