"""Guiders: how a conditional denoiser becomes the one a sampler runs (sgm's ``guiders.py``).

In scaled coordinates D(x, σ) = x + σ² ∇_x log p_σ(x), so guidance written on scores, noise predictions
(ε = (x − D)/σ) or denoised images is the same linear combination:

* :class:`NoGuidance`:  D(x, σ | c).
* :class:`ClassifierFree` (Ho & Salimans 2021, Eq. 6):  D̃ = D(x, σ | ∅) + w (D(x, σ | c) − D(x, σ | ∅)), evaluated
  as one forward pass over a batch of 2B; w = 0 is the unconditional model, w = 1 the conditional one, w > 1
  guided (their w is our w − 1).  ∅ drops the conditions the model was trained to drop.
* :class:`ClassifierGuidance` (Dhariwal & Nichol 2021, Alg. 1–2; Song et al. 2021, Eq. 14):
  D̃ = D(x, σ | c) + s σ² ∇_x log p_φ(y | x, σ) with a noise-conditional classifier p_φ on the same process.

A denoiser returns x̂_0, or (x̂_0, v) for a model that learns its variance; guidance acts on x̂_0 and keeps
the conditional model's v.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from lit_diffusion.conditioning import concat_batches
from lit_diffusion.errors import UserError

ConditionalDenoiser = Callable[[Tensor, Tensor, Mapping[str, Tensor]], Any]
Denoiser = Callable[[Tensor, Tensor], Any]


def map_denoised(fn: Callable[[Tensor], Tensor], out: Any) -> Any:
    """Apply ``fn`` to x̂_0 of a denoiser output, keeping a learned variance unchanged."""
    return (fn(out[0]), *out[1:]) if isinstance(out, tuple) else fn(out)


class NoGuidance:
    name = "none"
    scale = None

    def denoiser(self, denoise: ConditionalDenoiser, cond: dict, uncond: dict | None,
                 conditions: Mapping[str, Tensor]) -> Denoiser:
        return lambda x, sigma: denoise(x, sigma, cond)


class ClassifierFree:
    """D̃ = D_∅ + w (D_c − D_∅) from one 2B forward pass."""

    name = "cfg"

    def __init__(self, scale: float = 3.0):
        self.scale = scale

    def denoiser(self, denoise: ConditionalDenoiser, cond: dict, uncond: dict | None,
                 conditions: Mapping[str, Tensor]) -> Denoiser:
        if uncond is None:
            raise UserError("classifier-free guidance needs a conditional model trained with condition dropout "
                            "(a conditioner embedder with dropout > 0, e.g. experiment=cfg_mnist); for an "
                            "unconditional model guide with a noise-conditional classifier (classifier=PATH)")
        both = concat_batches(uncond, cond)

        def guided(x: Tensor, sigma: Tensor):
            out = denoise(torch.cat([x, x]), torch.cat([sigma, sigma]), both)
            halves = [o.chunk(2) for o in out] if isinstance(out, tuple) else [out.chunk(2)]
            (d_uncond, d_cond), extras = halves[0], [h[1] for h in halves[1:]]
            combined = d_uncond + self.scale * (d_cond - d_uncond)
            return (combined, *extras) if extras else combined

        return guided


class ClassifierGuidance:
    """D̃ = D + s σ² ∇_x log p_φ(y | x, σ); ``classifier.log_prob(x, σ, y)`` per sample in scaled coordinates,
    y read from ``conditions[label_key]``."""

    name = "classifier"

    def __init__(self, classifier: Any, scale: float = 1.0, label_key: str = "label"):
        self.classifier, self.scale, self.label_key = classifier, scale, label_key

    def denoiser(self, denoise: ConditionalDenoiser, cond: dict, uncond: dict | None,
                 conditions: Mapping[str, Tensor]) -> Denoiser:
        if self.label_key not in conditions:
            raise UserError("classifier guidance needs the classes to guide towards: pass class_labels=[...]")
        labels = conditions[self.label_key]

        def guided(x: Tensor, sigma: Tensor):
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                grad = torch.autograd.grad(self.classifier.log_prob(x_in, sigma, labels).sum(), x_in)[0]
            shift = self.scale * sigma.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1))) ** 2 * grad
            return map_denoised(lambda d: d + shift, denoise(x, sigma, cond))

        return guided
