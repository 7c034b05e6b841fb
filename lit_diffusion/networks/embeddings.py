"""Noise-level embeddings: map the network's real-valued noise input (a DDPM timestep, log(sigma)/4, a
continuous t in [0, 1], ...) of shape (B,) to a feature vector of shape (B, dim)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _check_even(dim: int) -> None:
    if dim < 4 or dim % 2:
        raise ValueError(f"embedding dimension must be even and at least 4, got {dim}")


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer sinusoidal embedding as in DDPM's ``get_timestep_embedding`` (Ho et al. 2020):
    ``[sin(t * f_0), ..., sin(t * f_{h-1}), cos(t * f_0), ..., cos(t * f_{h-1})]`` with ``h = dim // 2``
    and ``f_i = max_period ** (-i / (h - 1))``.
    """
    _check_even(dim)
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / (half - 1))
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class SinusoidalEmbedding(nn.Module):
    """Module wrapper of :func:`sinusoidal_embedding` (Ho et al. 2020)."""

    def __init__(self, dim: int):
        super().__init__()
        _check_even(dim)
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        return sinusoidal_embedding(t, self.dim)


class GaussianFourierEmbedding(nn.Module):
    """Gaussian random Fourier features (Tancik et al. 2020), as NCSN++ applies them to log(sigma)
    (Song et al. 2021): ``[sin(2 pi t w), cos(2 pi t w)]`` with fixed ``w ~ N(0, scale^2)`` of size
    ``dim // 2``.  ``w`` is a buffer, so it is saved in and restored from checkpoints.
    """

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        _check_even(dim)
        self.register_buffer("weight", torch.randn(dim // 2) * scale)

    def forward(self, t: Tensor) -> Tensor:
        args = 2 * math.pi * t.float()[:, None] * self.weight.float()[None, :]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)
