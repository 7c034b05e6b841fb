"""Guidance as a modified denoiser: every sampler is guided without knowing it.

In scaled coordinates D(x, σ) = x + σ² ∇_x log p_σ(x), so guidance written on scores, noise predictions
(ε = (x − D)/σ) or denoised images is the same linear combination:

* classifier-free (Ho & Salimans 2021, Eq. 6):  D̃ = D(x, σ | ∅) + w (D(x, σ | y) − D(x, σ | ∅));
  w = 0 is the unconditional model, w = 1 the conditional one, w > 1 guided (their w is our w − 1).
* classifier (Dhariwal & Nichol 2021, Alg. 1–2; Song et al. 2021, Eq. 14):  D̃ = D(x, σ) + s σ² ∇_x log p_φ(y | x, σ)
  with a noise-conditional classifier p_φ trained on the same process.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Denoiser = Callable[..., Tensor]


def classifier_free(conditional: Denoiser, unconditional: Denoiser, scale: float) -> Denoiser:
    """D̃ = D_∅ + w (D_y − D_∅); a learned variance, if asked for, is the conditional model's."""

    def guided(x: Tensor, sigma: Tensor, return_variance: bool = False):
        if return_variance:
            cond, variance = conditional(x, sigma, return_variance=True)
        else:
            cond = conditional(x, sigma)
        uncond = unconditional(x, sigma)
        out = uncond + scale * (cond - uncond)
        return (out, variance) if return_variance else out

    return guided


def classifier_guided(denoiser: Denoiser, log_prob: Callable[[Tensor, Tensor, Tensor], Tensor],
                      class_labels: Tensor, scale: float) -> Denoiser:
    """D̃ = D + s σ² ∇_x log p_φ(y | x, σ), ``log_prob(x, σ, y)`` per sample in scaled coordinates."""

    def guided(x: Tensor, sigma: Tensor, return_variance: bool = False):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            grad = torch.autograd.grad(log_prob(x_in, sigma, class_labels).sum(), x_in)[0]
        shift = scale * sigma.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1))) ** 2 * grad
        if return_variance:
            out, variance = denoiser(x, sigma, return_variance=True)
            return out + shift, variance
        return denoiser(x, sigma) + shift

    return guided
