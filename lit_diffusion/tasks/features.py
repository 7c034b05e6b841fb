"""Pixel features from a trained, frozen diffusion model (Baranchuk et al. 2022, "Label-Efficient Semantic
Segmentation with Diffusion Models", §3–4).

An image x_0 is noised to a few levels, x_t = x_0 + σ_t ε with one noise ε shared by all images (their
``share_noise``), the denoiser is run once per level, and the activations of chosen UNet decoder blocks are
caught by forward hooks, upsampled (bilinear) to the image size and concatenated over blocks and levels: a
feature vector per pixel.  Their FFHQ setting takes decoder blocks 6, 7, 8 and 9 of the 18 of ADM's UNet at
t = 50, 150, 250 (of T = 1000); here ``blocks`` index :attr:`lit_diffusion.networks.UNet.up` and ``levels`` are
fractions of the diffusion time (:func:`lit_diffusion.tasks.sdedit.sigma_at`), so t = 50, 150, 250 is 0.05,
0.15, 0.25.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_diffusion.errors import UserError
from lit_diffusion.tasks.sdedit import sigma_at


class DecoderFeatures:
    """Per-pixel features (B, D, H, W) of images in [-1, 1] from ``model`` (a DiffusionModule with a UNet),
    with D the sum of the chosen blocks' output channels times the number of ``levels``."""

    def __init__(self, model, blocks: Sequence[int], levels: Sequence[float], seed: int = 0):
        decoder = getattr(model.network, "up", None)
        if decoder is None:
            raise UserError(f"diffusion features need a UNet with decoder blocks (network.up); "
                            f"{type(model.network).__name__} has none")
        if not blocks or any(not 0 <= b < len(decoder) for b in blocks):
            raise UserError(f"feature blocks {list(blocks)} must index the UNet's {len(decoder)} decoder blocks "
                            f"(0 … {len(decoder) - 1}, coarse to fine)")
        self.model, self.blocks = model, list(blocks)
        self.sigmas = [sigma_at(model.process, level) for level in levels]
        self.noise = torch.randn(model.sample_shape, generator=torch.Generator().manual_seed(seed)).to(model.device)
        self.caught: dict[int, Tensor] = {}
        self.hooks = [decoder[b].register_forward_hook(self.catch(b)) for b in self.blocks]

    def catch(self, block: int):
        def hook(module, inputs, output):
            self.caught[block] = output
        return hook

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        size = images.shape[-2:]
        parts = []
        for sigma in self.sigmas:
            x = images + sigma * self.noise.expand_as(images)
            self.model.predict(x, x.new_full((len(x),), sigma, dtype=torch.float64))
            parts += [F.interpolate(self.caught[b], size=size, mode="bilinear", align_corners=False)
                      for b in self.blocks]
        self.caught.clear()
        return torch.cat(parts, dim=1)

    def remove(self) -> None:
        """Take the hooks off the network."""
        for hook in self.hooks:
            hook.remove()
