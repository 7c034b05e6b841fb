"""MVTec AD (Bergmann et al. 2019, "MVTec AD — A Comprehensive Real-World Dataset for Unsupervised Anomaly
Detection"), one category at a time, in the layout of its archive (https://www.mvtec.com/company/research/
datasets/mvtec-ad, CC BY-NC-SA 4.0; it cannot be downloaded automatically):

    <root>/<category>/train/good/*.png                      defect-free training images
    <root>/<category>/test/good/*.png                       defect-free test images
    <root>/<category>/test/<defect>/*.png                   defective test images, one folder per defect type
    <root>/<category>/ground_truth/<defect>/<name>_mask.png their pixel masks (255 on the defect)

Training uses ``train/good`` only; validation is the test split, whose samples carry ``label`` (0: good,
1 + the index of the sorted defect folder) and ``anomaly_mask`` (1, S, S), 1 on defective pixels (all 0 for
good images), resized with nearest-neighbour interpolation to the images' size.  So
``python -m lit_diffusion.anomaly normal_classes=[0]`` scores image AUROC and pixel AUROC/Dice on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lit_diffusion.datamodules.base import ImageDataModule, Split, missing_dataset_error
from lit_diffusion.datamodules.image_folder import find_images
from lit_diffusion.errors import UserError

GOOD = "good"
CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
              "tile", "toothbrush", "transistor", "wood", "zipper")
"""The 15 categories of MVTec AD (5 textures, 10 objects)."""


class MVTecADDataModule(ImageDataModule):
    """One MVTec AD ``category`` under ``root`` (see the module docstring), resized to ``image_size``."""

    dataset_name = "MVTec AD"

    def __init__(self, *, category: str = "bottle", image_size: int = 256, **kwargs: Any):
        super().__init__(image_size=image_size, **kwargs)
        self.category = category

    def folder(self) -> Path:
        folder = None if self.root is None else self.root / self.category
        if folder is None or not (folder / "train" / GOOD).is_dir() or not (folder / "test").is_dir():
            raise missing_dataset_error(
                f"MVTec AD category '{self.category}' (train/good/, test/, ground_truth/)", [folder] if folder else [],
                "download MVTec AD from https://www.mvtec.com/company/research/datasets/mvtec-ad (registration, "
                "CC BY-NC-SA 4.0), extract it and set data.root=/path/to/mvtec_anomaly_detection "
                f"data.category=<one of {', '.join(CATEGORIES)}>")
        return folder

    @property
    def defects(self) -> list[str]:
        """The defect types of the category: its test folders other than ``good``, sorted."""
        return sorted(p.name for p in (self.folder() / "test").iterdir() if p.is_dir() and p.name != GOOD)

    @property
    def num_classes(self) -> int:
        return 1 + len(self.defects)

    def mask(self, image: Path, defect: str) -> np.ndarray:
        """The (1, S, S) bool mask of a test image (all False for a good one)."""
        if defect == GOOD:
            return np.zeros((1, self.image_size, self.image_size), dtype=bool)
        path = self.folder() / "ground_truth" / defect / f"{image.stem}_mask.png"
        if not path.is_file():
            raise UserError(f"MVTec AD: {image} has no mask at {path}; every defective test image needs one")
        with Image.open(path) as file:
            resized = file.convert("L").resize((self.image_size, self.image_size), Image.Resampling.NEAREST)
        return (np.asarray(resized) > 127)[None]

    def load_splits(self) -> tuple[Split, Split | None]:
        folder = self.folder()
        train = find_images(folder / "train" / GOOD)
        kinds = [GOOD, *self.defects]
        test = [(path, label) for label, kind in enumerate(kinds) for path in find_images(folder / "test" / kind)]
        if not train or not test:
            raise UserError(f"MVTec AD '{self.category}' has {len(train)} training and {len(test)} test images under "
                            f"{folder}; both must hold PNG images")
        labels = np.array([label for _, label in test], dtype=np.int64)
        masks = np.stack([self.mask(path, kinds[label]) for path, label in test])
        return ((np.array([str(p) for p in train]), np.zeros(len(train), dtype=np.int64)),
                (np.array([str(p) for p, _ in test]), {"label": labels, "anomaly_mask": masks}))
