"""CIFAR-10 from torchvision's on-disk layout ``root/cifar-10-batches-py/``."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torchvision

from lit_diffusion.datamodules.base import ImageDataModule, Split, missing_dataset_error

BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)


def read_batches(paths: list[Path]) -> Split:
    """Concatenate pickled CIFAR batches (dicts with b"data": uint8 (N, 3072) CHW rows, b"labels") as HWC."""
    images, labels = [], []
    for path in paths:
        with open(path, "rb") as file:
            batch = pickle.load(file, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(batch[b"labels"])
    return np.concatenate(images), np.asarray(labels, dtype=np.int64)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10, 10 classes, 32x32 RGB: 50,000 train and 10,000 test images (used for validation).

    The batches are read directly (torchvision's loader insists on the official checksums); torchvision
    downloads them into ``root`` when ``download=True``.
    """

    dataset_name = "CIFAR-10"
    num_classes = 10

    def __init__(self, *, batch_size: int = 128, random_flip: bool = True, **kwargs: Any):
        super().__init__(batch_size=batch_size, random_flip=random_flip, **kwargs)

    def download_data(self) -> None:
        torchvision.datasets.CIFAR10(self._batches_dir().parent, train=True, download=True)

    def load_splits(self) -> tuple[Split, Split | None]:
        directory = self._batches_dir()
        paths = [directory / name for name in TRAIN_BATCHES + TEST_BATCHES]
        if not all(path.is_file() for path in paths):
            raise missing_dataset_error(
                f"CIFAR-10 ({', '.join(TRAIN_BATCHES + TEST_BATCHES)})",
                [directory],
                f"set data.root=/path/to/dir containing {BATCHES_DIR}/ (cifar-10-python.tar.gz from "
                "https://www.cs.toronto.edu/~kriz/cifar.html, extracted), "
                "or set data.download=true on a machine with internet",
            )
        return read_batches(paths[: len(TRAIN_BATCHES)]), read_batches(paths[len(TRAIN_BATCHES) :])

    def _batches_dir(self) -> Path:
        if self.root is None:
            raise missing_dataset_error(
                "CIFAR-10", [], f"set data.root=/path/to/dir containing {BATCHES_DIR}/ (or to download into)"
            )
        return self.root / BATCHES_DIR
