"""CelebA-HQ as the LDM / taming-transformers experiments read it: the 30,000 faces as image files or as taming's
``.npy`` files, split by taming's lists ``celebahqtrain.txt`` (25,000) and ``celebahqvalidation.txt`` (5,000).

taming's layout (``taming/data/faceshq.py``): ``data/celebahq/imgHQ00000.npy`` … , each a uint8 array of shape
(1, 3, 1024, 1024); the lists hold one file name per line.  A list entry may also name an exported image
(``imgHQ00000.png``) or give the stem only: it matches the file with that stem under ``root``.  Without lists,
every image under ``root`` is used and ``val_fraction`` is held out (as :class:`ImageFolderDataModule`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from lit_diffusion.datamodules.base import ImageDataModule, Split, missing_dataset_error
from lit_diffusion.datamodules.image_folder import IMAGE_EXTENSIONS
from lit_diffusion.errors import UserError

NUMPY_EXTENSION = ".npy"


class NumpyImages:
    """A sequence of taming ``.npy`` images read on access: (1, C, H, W) or (C, H, W) uint8 → (H, W, C)."""

    def __init__(self, paths: np.ndarray):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        array = np.load(self.paths[index], allow_pickle=False)
        if array.ndim == 4:
            array = array[0]
        if array.ndim != 3 or array.dtype != np.uint8:
            raise UserError(f"{self.paths[index]}: expected a uint8 array of shape (1, C, H, W) as taming writes, got "
                            f"{array.dtype} {array.shape}")
        image = array.transpose(1, 2, 0)
        return np.ascontiguousarray(image[..., 0] if image.shape[-1] == 1 else image)


class CelebAHQDataModule(ImageDataModule):
    """CelebA-HQ from ``root`` (image files or taming ``.npy`` files), split by ``train_list`` / ``val_list``.

    Args:
        train_list, val_list: taming's ``celebahqtrain.txt`` / ``celebahqvalidation.txt`` (paths, or names
            relative to ``root``'s parent as in taming's ``data/``); both or neither.
    """

    dataset_name = "CelebA-HQ"

    def __init__(self, *, train_list: str | None = None, val_list: str | None = None, image_size: int = 256,
                 channels: int = 3, random_flip: bool = True, **kwargs: Any):
        super().__init__(image_size=image_size, channels=channels, random_flip=random_flip, **kwargs)
        if (train_list is None) != (val_list is None):
            raise UserError("give both data.train_list and data.val_list (taming's celebahqtrain.txt and "
                            "celebahqvalidation.txt), or neither (then val_fraction is held out)")
        self.lists = None if train_list is None else (Path(train_list).expanduser(), Path(val_list).expanduser())

    @functools.cached_property
    def _files(self) -> dict[str, Path]:
        """Image and ``.npy`` files under ``root`` by stem."""
        extensions = IMAGE_EXTENSIONS | {NUMPY_EXTENSION}
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in extensions and not p.name.startswith(".")
                       ) if self.root and self.root.is_dir() else []
        if not files:
            raise missing_dataset_error(
                "CelebA-HQ (no image or taming .npy files)", [self.root] if self.root else [],
                "set data.root=/path/to/celebahq (images, or taming's imgHQ*.npy) and, for the LDM/taming split, "
                "data.train_list=.../celebahqtrain.txt data.val_list=.../celebahqvalidation.txt")
        return {p.stem: p for p in files}

    def _listed(self, path: Path) -> Split:
        if not path.is_file():
            raise UserError(f"split list {path} does not exist; taming-transformers ships it as data/{path.name}")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        missing = [n for n in names if Path(n).stem not in self._files]
        if missing:
            raise UserError(f"{path}: {len(missing)} of {len(names)} listed images are not under {self.root} "
                            f"(e.g. {missing[0]}); point data.root at the folder holding them")
        return self._images([self._files[Path(n).stem] for n in names]), None

    @staticmethod
    def _images(paths: list[Path]) -> Any:
        kinds = {p.suffix.lower() == NUMPY_EXTENSION for p in paths}
        if len(kinds) > 1:
            raise UserError("CelebA-HQ: the split mixes .npy files and image files; use one format")
        array = np.array([str(p) for p in paths])
        return NumpyImages(array) if kinds == {True} else array

    def load_splits(self) -> tuple[Split, Split | None]:
        if self.lists is None:
            return (self._images(list(self._files.values())), None), None
        return self._listed(self.lists[0]), self._listed(self.lists[1])
