"""Where evaluation images come from, as uint8 batches (N, C, H, W): samples, dataset splits, image folders.

Every source is quantised to 8 bits the same way before features are taken (samples as if saved to PNG:
round((x + 1) · 127.5)), so a model's samples, a dataset and another framework's PNGs meet on equal terms.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from lit_diffusion.config import safe_instantiate
from lit_diffusion.datamodules.base import read_image
from lit_diffusion.datamodules.image_folder import find_images
from lit_diffusion.errors import UserError
from lit_diffusion.images import to_uint8

SPLITS = ("train", "val")
LOADER_KEYS = ("batch_size", "num_workers", "pin_memory", "download", "pairs")
"""Data config keys that change how images are loaded or add paired keys, not which images: left out of cache keys."""


def folder_images(root: str | Path, limit: int | None = None, batch_size: int = 100) -> Iterator[Tensor]:
    """The images under ``root`` (sorted, recursive), RGB uint8, in batches; all must share one size."""
    root = Path(root)
    files = find_images(root) if root.is_dir() else []
    if not files:
        raise UserError(f"no .png/.jpg/.jpeg/.webp/.bmp images under '{root}' ({root.absolute()}); pass a folder of images")
    files = files[:limit] if limit else files
    first = None  # the size of the first batch; every batch must match it
    for start in range(0, len(files), batch_size):
        arrays = []
        for path in files[start: start + batch_size]:
            arrays.append(np.asarray(read_image(path, "RGB")))
        if len({a.shape for a in arrays}) > 1 or (first is not None and arrays[0].shape != first):
            raise UserError(f"images under '{root}' differ in size; resize them to one size first")
        first = arrays[0].shape
        yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def count_folder(root: str | Path) -> int:
    return len(find_images(Path(root))) if Path(root).is_dir() else 0


def dataset_split(data_cfg: dict, split: str):
    """The dataset of one split of a data config (after its transform: resized, in [-1, 1])."""
    if split not in SPLITS:
        raise UserError(f"split={split} is not one of {', '.join(SPLITS)}")
    datamodule = safe_instantiate(data_cfg)
    datamodule.setup("fit")
    dataset = datamodule.train_set if split == "train" else datamodule.val_set
    if dataset is None:
        raise UserError(f"the dataset has no '{split}' split (data.val_fraction=0?); use split=train")
    return dataset


def dataset_images(data_cfg: dict, split: str, limit: int | None = None, batch_size: int = 100) -> Iterator[Tensor]:
    """The first ``limit`` (default: all) images of a split, in the split's fixed order, as uint8 batches."""
    dataset = dataset_split(data_cfg, split)
    if limit:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        yield to_uint8(batch["image"])


def cache_fields(data_cfg: dict) -> dict:
    """The data config keys that decide which images (and preprocessing) a split holds."""
    return {k: v for k, v in sorted(data_cfg.items()) if k not in LOADER_KEYS}
