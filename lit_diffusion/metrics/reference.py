"""Reference features of a dataset split, computed once and cached on disk.

The cache key is a hash of everything that changes the features: the dataset config (target, variant, root,
resolution, channels, crop, split seed …), the split, the number of images, the extractor, the hash of its
weights and its preprocessing.  Change any of them and a new entry is computed.  Entries live in
``$LIT_DIFFUSION_CACHE/reference`` (default ``~/.cache/lit_diffusion/reference``) as ``.npz`` files read
with ``allow_pickle=False``; each records its key fields next to the features.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from lit_diffusion.files import atomic_write
from lit_diffusion.metrics.features import extract
from lit_diffusion.metrics.images import cache_fields, dataset_images

FORMAT = 1


def cache_dir() -> Path:
    root = os.environ.get("LIT_DIFFUSION_CACHE") or Path.home() / ".cache" / "lit_diffusion"
    return Path(root) / "reference"


def reference_id(fields: dict) -> str:
    """A short stable hash of the key fields."""
    text = json.dumps({"format": FORMAT, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Reference:
    id: str
    fields: dict
    features: Tensor
    path: Path
    cached: bool
    """True when read from the cache, False when computed now."""


def reference_features(fields: dict, compute: Callable[[], Tensor]) -> Reference:
    """The cached features for ``fields``, or ``compute()`` them and store them."""
    key = reference_id(fields)
    path = cache_dir() / f"{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return Reference(key, json.loads(str(data["fields"])), torch.from_numpy(data["features"]), path, True)
    features = compute()
    # atomic: a crashed run never leaves a truncated entry, and two runs computing it at once each write a whole one
    atomic_write(path, lambda file: np.savez(file, features=features.float().numpy(),
                                             fields=json.dumps(fields, sort_keys=True, default=str)))
    return Reference(key, fields, features, path, False)


def dataset_reference(extractor, data_cfg: dict, split: str, count: int | None, device="cpu",
                      batch_size: int = 100) -> Reference:
    """Cached features of the first ``count`` (None: all) images of a dataset split."""
    fields = {"data": cache_fields(data_cfg), "split": split, "count": count, "extractor": extractor.name,
              "weights": extractor.weights_id, "preprocessing": extractor.preprocessing}
    return reference_features(
        fields, lambda: extract(extractor, dataset_images(data_cfg, split, count, batch_size), device)[0])
