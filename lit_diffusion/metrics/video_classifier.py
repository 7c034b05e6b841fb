"""A small video classifier trained here, whose features stand in for I3D's in a Fréchet video distance.

FVD (Unterthiner et al. 2019) is the Fréchet distance between I3D features (a Kinetics-400 action classifier) of real
and generated videos; I3D's weights cannot be downloaded on this machine.  Its role — features that see both what
is in a video and how it moves — is played by :class:`VideoClassifier`, a 3-D CNN trained on the training videos
of the data for two tasks: which digits appear (multi-label, from the data's ``digits``), and whether the frames
are in their true order or shuffled (self-supervised, so the features must encode motion).  Its features are the
global average pool of the last convolution (``feature_dim``).  Numbers computed with it compare our runs with each
other, not with published FVDs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lit_diffusion.datamodules.base import EpochShuffleSampler
from lit_diffusion.errors import UserError

NUM_DIGITS = 10


class VideoClassifier(nn.Module):
    """Three strided 3×3×3 convolutions (16, 32, ``feature_dim`` channels) with GroupNorm and SiLU, global average
    pooling to the features, and two linear heads: digit logits (10) and an in-order logit."""

    def __init__(self, in_channels: int = 1, feature_dim: int = 64):
        super().__init__()
        layers, channels = [], in_channels
        for out, stride in ((16, (1, 2, 2)), (32, 2), (feature_dim, 2)):
            layers += [nn.Conv3d(channels, out, 3, stride=stride, padding=1), nn.GroupNorm(4, out), nn.SiLU()]
            channels = out
        self.body = nn.Sequential(*layers)
        self.digits = nn.Linear(feature_dim, NUM_DIGITS)
        self.in_order = nn.Linear(feature_dim, 1)

    def features(self, videos: Tensor) -> Tensor:
        """(B, C, T, H, W) in [-1, 1] → (B, feature_dim)."""
        return self.body(videos).mean(dim=(2, 3, 4))

    def forward(self, videos: Tensor) -> tuple[Tensor, Tensor]:
        features = self.features(videos)
        return self.digits(features), self.in_order(features)[:, 0]


def shuffled_half(videos: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The batch with the frames of its second half in a random order; targets 1 (in order) and 0 (shuffled)."""
    videos, half = videos.clone(), len(videos) // 2
    for i in range(half, len(videos)):
        order = torch.randperm(videos.shape[2], generator=generator)
        videos[i] = videos[i][:, order]
    return videos, (torch.arange(len(videos)) < half).float()


def train_video_classifier(dataset: Dataset, *, steps: int, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                           channels: int = 1, device: torch.device | str = "cpu") -> VideoClassifier:
    """Train a :class:`VideoClassifier` on ``dataset``'s ``image`` videos and ``digits`` for ``steps`` Adam steps
    (batches of ``batch_size``, or the whole split when smaller), deterministically given ``seed`` (CPU)."""
    batch_size = min(batch_size, len(dataset))
    torch.manual_seed(seed)
    model = VideoClassifier(channels).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr)
    generator = torch.Generator().manual_seed(seed)
    sampler = EpochShuffleSampler(len(dataset), seed)
    done, epoch = 0, 0
    while done < steps:
        sampler.set_epoch(epoch)
        for batch in DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True):
            if "digits" not in batch:
                raise UserError("the video classifier learns the digits of Moving MNIST videos; this data has no "
                                "'digits' (use data=moving_mnist)")
            videos, in_order = shuffled_half(batch["image"], generator)
            digit_logits, order_logits = model(videos.to(device))
            loss = (F.binary_cross_entropy_with_logits(digit_logits, batch["digits"].to(device))
                    + F.binary_cross_entropy_with_logits(order_logits, in_order.to(device)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
        epoch += 1
    return model.eval().requires_grad_(False)


@torch.no_grad()
def classifier_accuracy(model: VideoClassifier, videos: Tensor, digits: Tensor,
                        generator: torch.Generator) -> dict[str, float]:
    """Exact-match digit-set accuracy and in-order/shuffled accuracy on held-out videos (how much the features know)."""
    shuffled, in_order = shuffled_half(videos, generator)
    digit_logits, order_logits = model(shuffled)
    return {"digits_exact_match": ((digit_logits > 0) == digits.bool()).all(1).float().mean().item(),
            "order_accuracy": ((order_logits > 0).float() == in_order).float().mean().item()}
