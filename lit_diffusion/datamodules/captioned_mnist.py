"""Captioned Fashion-MNIST and MNIST, and MNIST digit pairs with positional captions (offline, deterministic).

The captions come from :mod:`lit_diffusion.datamodules.captions`; samples keep their ``label`` next to the
``caption`` (for caption accuracy and class-conditional baselines).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from lit_diffusion.datamodules.base import Split
from lit_diffusion.datamodules.captions import CAPTION_KEY, FASHION_MNIST, MNIST, ClassCaptions, DigitPairCaptions
from lit_diffusion.datamodules.fashion_mnist import FashionMNISTDataModule
from lit_diffusion.datamodules.mnist import MNISTDataModule


def with_captions(split: Split | None, captioner, seed: int) -> Split | None:
    """A labeled split with its captions as a second per-image value."""
    if split is None:
        return None
    images, labels = split
    return images, {"label": np.asarray(labels, dtype=np.int64), CAPTION_KEY: np.array(captioner.captions(labels, seed))}


class ClassCaptioned:
    """Mixin of a labeled image DataModule: each split's images get their class captions from :attr:`captioner`."""

    captioner: ClassCaptions

    def load_splits(self) -> tuple[Split, Split | None]:
        train, test = super().load_splits()
        return with_captions(train, self.captioner, 0), with_captions(test, self.captioner, 1)


class FashionMNISTCaptionsDataModule(ClassCaptioned, FashionMNISTDataModule):
    """Fashion-MNIST with class captions in five templates ("a photo of a pullover", "an ankle boot on a dark
    background", …; :data:`~lit_diffusion.datamodules.captions.FASHION_MNIST`), drawn per image with a fixed seed."""

    captioner = FASHION_MNIST


class MNISTCaptionsDataModule(ClassCaptioned, MNISTDataModule):
    """MNIST digits with captions naming the digit by numeral or word ("a photo of a 7", "a seven written by
    hand"; :data:`~lit_diffusion.datamodules.captions.MNIST`)."""

    captioner = MNIST


CANVAS = 32
"""Side of a digit-pair canvas: two 16×16 digits side by side, vertically centred."""


def shrink_digit(digit: np.ndarray) -> np.ndarray:
    """A 28×28 MNIST digit's central 20×20 box (where MNIST centres every digit) resized to 16×16."""
    return np.asarray(Image.fromarray(digit[4:24, 4:24]).resize((CANVAS // 2, CANVAS // 2), Image.BILINEAR))


def compose_pairs(digits: np.ndarray, labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` canvases (N, 32, 32) of two digits drawn at random from ``digits``, and their pair labels
    10 × left + right."""
    rng = np.random.default_rng(seed)
    left, right = rng.integers(len(digits), size=(2, count))
    canvases = np.zeros((count, CANVAS, CANVAS), dtype=np.uint8)
    half, top = CANVAS // 2, CANVAS // 4
    for i, (a, b) in enumerate(zip(left.tolist(), right.tolist())):
        canvases[i, top:top + half, :half] = shrink_digit(digits[a])
        canvases[i, top:top + half, half:] = shrink_digit(digits[b])
    return canvases, 10 * np.asarray(labels)[left] + np.asarray(labels)[right]


class MNISTPairsDataModule(MNISTDataModule):
    """Two MNIST digits on a 32×32 canvas with positional captions ("a 3 on the left and an 8 on the right",
    "an 8 to the right of a 3", …; :class:`~lit_diffusion.datamodules.captions.DigitPairCaptions`); label
    10 × left + right.

    Training pairs are drawn from the training digits and validation pairs from held-out digits (the bundled 5k:
    ``val_fraction`` of them, chosen by ``seed``; the full set: its test digits), so no validation canvas
    reuses a training digit.

    Args:
        num_pairs, num_val_pairs: canvases composed for training and validation.
    """

    dataset_name = "MNIST digit pairs"
    num_classes = 100
    captioner = DigitPairCaptions()

    def __init__(self, *, num_pairs: int = 20000, num_val_pairs: int = 2000, image_size: int = CANVAS, **kwargs: Any):
        super().__init__(image_size=image_size, **kwargs)
        self.num_pairs, self.num_val_pairs = num_pairs, num_val_pairs

    def load_splits(self) -> tuple[Split, Split | None]:
        train, test = super().load_splits()
        if test is None:
            order = np.random.default_rng(self.seed).permutation(len(train[0]))
            held = round(len(order) * self.val_fraction)
            test = train[0][order[:held]], np.asarray(train[1])[order[:held]]
            train = train[0][order[held:]], np.asarray(train[1])[order[held:]]
        return self._pairs(train, self.num_pairs, 0), self._pairs(test, self.num_val_pairs, 1)

    def _pairs(self, digits: Split, count: int, seed: int) -> Split | None:
        """``count`` captioned canvases of these digits (None when there are none to make)."""
        if not count or not len(digits[0]):
            return None
        canvases, labels = compose_pairs(np.asarray(digits[0]), np.asarray(digits[1]), count, seed)
        return canvases, {"label": labels, CAPTION_KEY: np.array(self.captioner.captions(labels, seed))}
