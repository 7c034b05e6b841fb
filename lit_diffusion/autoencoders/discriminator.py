"""The PatchGAN discriminator of pix2pix (Isola et al. 2017) as used by taming-transformers and LDM.

Why it is written here: no maintained library ships it.  diffusers has the autoencoders but no discriminators;
torchmetrics has none; taming-transformers is a research repository (its PyPI packages, ``taming-transformers``
0.0.1 and a fork at 0.0.6, are unofficial 2021 snapshots) and pix2pix's repository is not a library.  The design
is ``taming.modules.discriminator.model.NLayerDiscriminator`` with BatchNorm: conv 4×4 stride 2 + LeakyReLU(0.2),
then ``n_layers − 1`` strided conv + BN + LeakyReLU blocks doubling the width (capped at 8 × ``ndf``), one
stride-1 block, and a stride-1 conv to one logit per patch.  Weights start as in taming's ``weights_init``:
conv N(0, 0.02), BN scale N(1, 0.02) and bias 0.  Module names (``main.0.weight`` …) match taming's, so its
``loss.discriminator.*`` weights load as they are.
"""

from __future__ import annotations

from torch import Tensor, nn


def weights_init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.constant_(module.bias, 0.0)


class NLayerDiscriminator(nn.Module):
    """PatchGAN: images (B, C, H, W) → logits (B, 1, H', W'), one per overlapping patch.

    Args:
        in_channels: image channels.
        ndf: filters of the first layer.
        n_layers: strided layers (3: a 70×70 receptive field; fewer for small images).
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1, got {n_layers}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            previous, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * previous, ndf * mult, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        previous, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * previous, ndf * mult, 4, stride=1, padding=1, bias=False),
                   nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.main = nn.Sequential(*layers)
        self.apply(weights_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)
