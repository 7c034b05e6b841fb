"""Noise-conditional image classifier: the downsampling half of the UNet (ADM's classifier, Dhariwal &
Nichol 2021, §4.1), with global average pooling instead of their attention pooling."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from lit_diffusion.networks.embeddings import SinusoidalEmbedding
from lit_diffusion.networks.unet import Downsample, EmbedSequential, ResBlock, group_norm


class EncoderClassifier(nn.Module):
    """logits(x, noise_cond) over ``num_classes``; residual blocks conditioned on the noise embedding."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, base_channels: int = 32,
                 channel_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1, dropout: float = 0.0,
                 num_groups: int = 32):
        super().__init__()
        self.num_classes = num_classes
        emb_ch = 4 * base_channels
        self.noise_embed = nn.Sequential(SinusoidalEmbedding(base_channels), nn.Linear(base_channels, emb_ch),
                                         nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        blocks, ch = [], base_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, base_channels * mult, emb_ch=emb_ch, dropout=dropout, num_groups=num_groups,
                                       skip_rescale=False))
                ch = base_channels * mult
            if level != len(channel_mult) - 1:
                blocks.append(Downsample(ch))
        self.blocks = EmbedSequential(*blocks)
        self.head = nn.Sequential(group_norm(ch, num_groups), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(ch, num_classes))

    def forward(self, x: Tensor, noise_cond: Tensor) -> Tensor:
        emb = self.noise_embed(torch.as_tensor(noise_cond, device=x.device).expand(x.shape[0]))
        return self.head(self.blocks(self.conv_in(x), emb.to(x.dtype)))
