"""Samplers: one plain function per algorithm, each working on a denoiser D(x, σ) over a σ grid.

Signature: ``fn(denoiser, x, sigmas, *, process, generator, **options) -> x_0``, where ``x`` is drawn
from the process's prior in scaled coordinates and ``sigmas`` decreases to a final 0.  Conditioning and
guidance are bound into the denoiser by the caller, so samplers never see them.
"""

from lit_diffusion.samplers.ancestral import sample_ancestral
from lit_diffusion.samplers.ddim import sample_ddim

ALGORITHMS = {
    "ancestral": sample_ancestral,
    "ddim": sample_ddim,
}

__all__ = ["ALGORITHMS", "sample_ancestral", "sample_ddim"]
