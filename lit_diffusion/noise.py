"""Noise distributions of the forward process: Gaussian, and AnoDDPM's multi-scale simplex noise.

Every framework here adds white Gaussian noise, x = x_0 + σ ε.  AnoDDPM (Wyatt et al. 2022, "AnoDDPM: Anomaly
Detection with Denoising Diffusion Probabilistic Models using Simplex Noise", §3.3) replaces ε by
multi-scale ("fractal") simplex noise in training, in the partial forward diffusion and in every reverse step:
low-frequency noise destroys large anomalies (a tumour) that white noise at the same level leaves
recognisable, so the reconstruction repairs them.  Its noise is a sum of octaves,

    ε(u) = Σ_{k<K} p^k n(2^k u / s + o_k),     u the pixel position,

with n Perlin's simplex noise (Perlin 2001; Gustavson 2005, "Simplex noise demystified"), K octaves, the
persistence p, the scale s of the coarsest octave in pixels (AnoDDPM's "frequency": 64 on 256 × 256 slices,
6 octaves, p = 0.8) and random offsets o_k.  Here it is standardised per image and channel to zero mean and
unit variance, so that σ keeps its meaning as the noise level (AnoDDPM's sum has a smaller, unnormalised
scale).

A noise is bound to the samplers' random streams by :meth:`bind`: the result is a generator whose ``randn``
draws this noise (:func:`lit_diffusion.randomness.randn`), so every sampler and task uses it for its start
and for each step's noise unchanged, image i still drawing only from the stream of (seed, i).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.randomness import PerImageGenerator, randn

SKEW = 0.5 * (math.sqrt(3.0) - 1.0)
"""F_2: skews the plane so that the simplex (triangle) grid becomes a square grid (Gustavson 2005)."""
UNSKEW = (3.0 - math.sqrt(3.0)) / 6.0
"""G_2: the inverse skew."""
TABLE = 256
"""Lattice hash period: the permutation table's length."""


class GaussianNoise:
    """White Gaussian noise ε ~ N(0, I), the forward noise of every framework."""

    name = "gaussian"

    def sample(self, shape: tuple[int, ...], generator, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
        return randn(shape, generator, device, dtype)

    def bind(self, generator):
        """The samplers' generator itself (they draw Gaussian noise from it)."""
        return generator

    def spec(self) -> dict:
        return {"name": self.name}


class SimplexNoise:
    """AnoDDPM's multi-scale simplex noise, standardised per image and channel (see the module docstring).

    Args:
        scale: size in pixels of the coarsest octave's features (AnoDDPM's ``frequency``; its 64 on 256-pixel
            images is a quarter of the side).
        octaves: K, each halving the feature size of the one before.
        persistence: p, the amplitude ratio of consecutive octaves.
    """

    name = "simplex"

    def __init__(self, scale: float = 64.0, octaves: int = 6, persistence: float = 0.8):
        if not scale > 0 or not isinstance(octaves, int) or octaves < 1 or not 0 < persistence <= 1:
            raise UserError(f"simplex noise needs scale > 0, an integer octaves >= 1 and 0 < persistence <= 1, got "
                            f"scale={scale}, octaves={octaves}, persistence={persistence}")
        self.scale, self.octaves, self.persistence = float(scale), octaves, float(persistence)

    def spec(self) -> dict:
        return {"name": self.name, "scale": self.scale, "octaves": self.octaves, "persistence": self.persistence}

    def bind(self, generator) -> "NoiseGenerator":
        return NoiseGenerator(self, generator)

    def sample(self, shape: tuple[int, ...], generator, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
        """Noise of ``shape`` (B, C, H, W): image b's lattice hashes, gradients and offsets come from its own
        stream of a :class:`~lit_diffusion.randomness.PerImageGenerator`, or all from one generator (or the
        global RNG)."""
        if len(shape) != 4:
            raise UserError(f"simplex noise is drawn for images (B, C, H, W), got shape {tuple(shape)}")
        batch, channels, height, width = shape
        fields = batch * channels * self.octaves
        if isinstance(generator, PerImageGenerator):
            tables = [lattice_tables(channels * self.octaves, g) for g in generator.generators]
            perm, angles, offsets = (torch.cat(parts).to(device) for parts in zip(*tables))
        else:
            perm, angles, offsets = (t.to(device) for t in lattice_tables(fields, generator))
        rows = torch.arange(height, device=device, dtype=torch.float64)[:, None].expand(height, width).reshape(-1)
        cols = torch.arange(width, device=device, dtype=torch.float64)[None, :].expand(height, width).reshape(-1)
        frequency = (2.0 ** torch.arange(self.octaves, device=device, dtype=torch.float64) / self.scale).repeat(
            batch * channels)[:, None]
        values = simplex2d(cols[None] * frequency + offsets[:, :1], rows[None] * frequency + offsets[:, 1:],
                           perm, angles)
        amplitude = self.persistence ** torch.arange(self.octaves, device=device, dtype=torch.float64)
        noise = (values.view(batch, channels, self.octaves, -1) * amplitude[:, None]).sum(2)
        noise = (noise - noise.mean(-1, keepdim=True)) / noise.std(-1, keepdim=True, correction=0).clamp(min=1e-12)
        return noise.view(shape).to(dtype)


class NoiseGenerator:
    """A sampler generator whose ``randn`` draws ``noise`` from the random streams of ``generator``."""

    def __init__(self, noise: SimplexNoise, generator):
        self.noise, self.generator = noise, generator

    def randn(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
        return self.noise.sample(shape, self.generator, device, dtype)


def lattice_tables(count: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """``count`` independent simplex fields: permutation tables (count, 2·256) (doubled to index without
    wrapping), gradient angles (count, 256) and lattice offsets (count, 2) in [0, 256)."""
    device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.stack([torch.randperm(TABLE, generator=generator, device=device) for _ in range(count)])
    angles = 2 * math.pi * torch.rand(count, TABLE, generator=generator, device=device, dtype=torch.float64)
    offsets = TABLE * torch.rand(count, 2, generator=generator, device=device, dtype=torch.float64)
    return torch.cat([perm, perm], dim=1), angles, offsets


def simplex2d(x: Tensor, y: Tensor, perm: Tensor, angles: Tensor) -> Tensor:
    """2-D simplex noise (Gustavson 2005) at the points (x, y) of shape (F, P), field f hashing lattice points
    with ``perm[f]`` onto the unit gradients at ``angles[f]``; values in about [-1, 1].

    Each point lies in one triangle of the simplex grid; each of its three corners contributes
    (½ − |d|²)₊⁴ ⟨g, d⟩, d the offset from the corner and g the corner's gradient; 70 scales the sum to ±1."""
    s = (x + y) * SKEW
    i, j = torch.floor(x + s), torch.floor(y + s)
    t = (i + j) * UNSKEW
    x0, y0 = x - (i - t), y - (j - t)
    step_i = (x0 > y0).long()  # the middle corner: (1, 0) below the diagonal, (0, 1) above it
    step_j = 1 - step_i
    ii, jj = i.long() % TABLE, j.long() % TABLE
    total = torch.zeros_like(x)
    for di, dj, dx, dy in ((0, 0, x0, y0),
                           (step_i, step_j, x0 - step_i + UNSKEW, y0 - step_j + UNSKEW),
                           (1, 1, x0 - 1 + 2 * UNSKEW, y0 - 1 + 2 * UNSKEW)):
        angle = angles.gather(1, perm.gather(1, ii + di + perm.gather(1, jj + dj)))
        falloff = (0.5 - dx * dx - dy * dy).clamp(min=0)
        total = total + falloff**4 * (torch.cos(angle) * dx + torch.sin(angle) * dy)
    return 70.0 * total


NOISES = {"gaussian": GaussianNoise, "simplex": SimplexNoise}


def build_noise(spec: dict | None):
    """A noise from ``{name: gaussian | simplex, <options>}`` (None: Gaussian)."""
    spec = dict(spec or {"name": "gaussian"})
    name = spec.pop("name", "gaussian")
    if name not in NOISES:
        raise UserError(f"unknown noise '{name}': choose one of {', '.join(NOISES)}")
    try:
        return NOISES[name](**spec)
    except TypeError as error:
        raise UserError(f"noise '{name}': {error}") from None
