"""Random streams for sampling: one generator per image, so image i depends only on (seed, i).

EDM's ``generate.py`` draws every image from its own generator seeded with the image's seed
(``StackedRandomGenerator``), which makes a run's images independent of the batch size and of which
images share a batch.  Samplers receive either such a :class:`PerImageGenerator` or one
``torch.Generator`` for the whole batch (closed-form tests) and draw through :func:`randn_like`; a noise of
:mod:`lit_diffusion.noise` other than the Gaussian wraps either (AnoDDPM's simplex noise).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor



def image_seed(seed: int, index: int) -> int:
    """Seed of image ``index`` of a run with seed ``seed`` (independent streams, numpy SeedSequence)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] % (2**63))


class PerImageGenerator:
    """One ``torch.Generator`` per image of a batch; images ``start … start + batch − 1`` of run ``seed``."""

    def __init__(self, seed: int, start: int, batch: int, device: torch.device | str = "cpu"):
        self.generators = [torch.Generator(device).manual_seed(image_seed(seed, start + i)) for i in range(batch)]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(f"a batch of {shape[0]} images needs {shape[0]} generators, got {len(self.generators)}")
        return torch.stack([torch.randn(shape[1:], generator=g, device=device, dtype=dtype) for g in self.generators])


def randn(shape: tuple[int, ...], generator, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise of ``shape`` from one batch generator or the global RNG; any other generator
    (per-image generators, a noise bound to them by :mod:`lit_diffusion.noise`) draws through its ``randn``."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return generator.randn(tuple(shape), device, dtype)


def randn_like(x: Tensor, generator) -> Tensor:
    """Standard normal noise shaped like ``x`` (see :func:`randn`)."""
    return randn(x.shape, generator, x.device, x.dtype)
