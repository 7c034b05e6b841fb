"""Fashion-MNIST from its original idx files: ``data.root``, torchvision's layout, or Debian's package."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torchvision

from lit_diffusion.datamodules.base import ImageDataModule, Split, missing_dataset_error
from lit_diffusion.errors import UserError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the four gzipped idx files."""

FILE_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The train images and labels, then the test images and labels; each is found as is or gzipped."""


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file of unsigned bytes (gzipped or not): magic 0x0000080N, N big-endian sizes, the data."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
        raw = file.read()
    if raw[:3] != b"\x00\x00\x08":
        raise UserError(f"{path} is not an idx file of unsigned bytes (it starts with {raw[:4].hex()})")
    shape = np.frombuffer(raw, dtype=">u4", count=raw[3], offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * raw[3]).reshape(shape)


def find_idx_file(directory: Path, name: str) -> Path | None:
    """``directory/name`` or ``directory/name.gz``, whichever exists first."""
    return next((path for path in (directory / name, directory / f"{name}.gz") if path.is_file()), None)


class FashionMNISTDataModule(ImageDataModule):
    """Fashion-MNIST, 10 classes, 28x28 grey: 60,000 train and 10,000 test images (used for validation).

    The idx files are looked for in ``root``, then ``root/FashionMNIST/raw`` (torchvision's layout, where
    ``download=True`` puts them), then :data:`DEBIAN_DIR`.
    """

    dataset_name = "Fashion-MNIST"
    num_classes = 10

    def __init__(self, *, image_size: int = 28, channels: int = 1, **kwargs: Any):
        super().__init__(image_size=image_size, channels=channels, **kwargs)

    def search_dirs(self) -> list[Path]:
        """The directories searched for the idx files, in order."""
        roots = [self.root, self.root / "FashionMNIST" / "raw"] if self.root else []
        return roots + [DEBIAN_DIR]

    def download_data(self) -> None:
        if self.root is None:
            raise UserError("Fashion-MNIST download needs a destination: set data.root=/path/to/dir")
        for train in (True, False):
            torchvision.datasets.FashionMNIST(self.root, train=train, download=True)

    def load_splits(self) -> tuple[Split, Split | None]:
        for directory in self.search_dirs():
            paths = [find_idx_file(directory, name) for name in FILE_NAMES]
            if None not in paths:
                images, labels, test_images, test_labels = map(read_idx, paths)
                return (images, labels), (test_images, test_labels)
        raise missing_dataset_error(
            f"Fashion-MNIST ({', '.join(f'{name}[.gz]' for name in FILE_NAMES)})",
            self.search_dirs(),
            f"apt-get install dataset-fashion-mnist (Debian/Ubuntu; installs them in {DEBIAN_DIR}), "
            "or set data.root=/path/to/dir containing the four files, "
            "or set data.root=/path/to/dir data.download=true on a machine with internet",
        )
