"""Semantic segmentation with diffusion models, and the supervised baseline they are compared with.

- :class:`PixelEnsemble`: Baranchuk et al. (2022)'s pixel classifier on diffusion features
  (:class:`lit_diffusion.tasks.features.DecoderFeatures`): an ensemble of MLPs D → 128 → 32 → C (ReLU, then
  BatchNorm), each trained by cross-entropy on the labelled pixels from its own initialisation and batches;
  a pixel's label is the members' majority vote (their ``predict_labels``; 10 members in the paper).
- :func:`sample_segmentations`: mask diffusion (SegDiff, Amit et al. 2021; MedSegDiff, Wu et al. 2023): the
  segmentation map (one-hot, in {−1, 1}) is the diffused variable of a model conditioned on the image through
  the concat route; several samples are averaged (the label is the argmax of the mean) and their per-pixel
  variance is the uncertainty map (MedSegDiff's ensemble).
- :class:`PlainUNet`: the same UNet as a plain segmentation network trained from scratch (noise input 0).

:func:`fit` is the one training loop of the MLPs and the baseline: Adam on cross-entropy, batches drawn with
replacement from a seeded generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def fit(module: nn.Module, inputs: Tensor, targets: Tensor, *, steps: int, batch_size: int, lr: float,
        seed: int) -> float:
    """Train ``module`` (logits over dim 1) on ``inputs``/``targets`` by cross-entropy; the last batch's loss."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        index = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=generator)
        loss = F.cross_entropy(module(inputs[index]), targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.eval()
    return loss.item()


def pixel_classifier(features: int, classes: int) -> nn.Sequential:
    """Baranchuk et al.'s MLP for fewer than 30 classes (from DatasetGAN): D → 128 → 32 → C."""
    return nn.Sequential(nn.Linear(features, 128), nn.ReLU(), nn.BatchNorm1d(128),
                         nn.Linear(128, 32), nn.ReLU(), nn.BatchNorm1d(32), nn.Linear(32, classes))


class PixelEnsemble(nn.Module):
    """``members`` pixel classifiers over D-dimensional features; :meth:`forward` gives the votes' labels."""

    def __init__(self, features: int, classes: int, members: int = 10):
        super().__init__()
        self.members = nn.ModuleList(pixel_classifier(features, classes) for _ in range(members))

    def fit(self, features: Tensor, labels: Tensor, *, steps: int, batch_size: int, lr: float, seed: int) -> list[float]:
        """Train each member on (P, D) features and (P,) labels with its own seed; their last losses."""
        losses = []
        for index, member in enumerate(self.members):
            torch.manual_seed(seed + index)  # the member's initialisation
            for layer in member:
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
            losses.append(fit(member, features, labels, steps=steps, batch_size=batch_size, lr=lr, seed=seed + index))
        return losses

    @torch.no_grad()
    def forward(self, features: Tensor) -> Tensor:
        """(B, D, H, W) features → (B, H, W) labels, the most frequent of the members' argmax labels."""
        batch, dim, height, width = features.shape
        pixels = features.permute(0, 2, 3, 1).reshape(-1, dim)
        votes = torch.stack([member(pixels).argmax(1) for member in self.members])
        return votes.mode(0).values.view(batch, height, width)


class PlainUNet(nn.Module):
    """A noise-conditional UNet used as an ordinary segmentation network: its noise input is 0."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, images: Tensor) -> Tensor:
        return self.unet(images, images.new_zeros(len(images)))


@torch.no_grad()
def sample_segmentations(model, conditions: Mapping[str, Tensor], *, samples: int, sampler: Mapping[str, Any],
                         seed: int, first: int = 0) -> tuple[Tensor, Tensor, int]:
    """Labels (B, H, W) from the mean of ``samples`` one-hot maps drawn by ``model`` given ``conditions``
    (sample s of image i from the seed ``seed + s`` and index ``first + i``), the per-pixel variance of the
    samples averaged over classes (B, H, W), and the NFE per sample."""
    draws = [model.sample(len(next(iter(conditions.values()))), dict(sampler), seed + s, dict(conditions),
                          first_index=first) for s in range(samples)]
    maps = torch.stack([draw.images for draw in draws])  # (S, B, C, H, W)
    return maps.mean(0).argmax(1), maps.var(0, correction=0).mean(1), draws[0].nfe
