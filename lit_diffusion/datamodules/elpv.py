"""ELPV: 2,624 electroluminescence images of solar cells with defect probabilities and cell types.

The dataset of Buerhop-Lutz et al. 2018 ("A Benchmark for Visual Identification of Defective Solar Cells in
Electroluminescence Imagery", EU PVSEC) and Deitsch et al. 2019 (Solar Energy 185), as the ``elpv-dataset``
PyPI package ships it (``pip install elpv-dataset``, no other download): 300 × 300 8-bit grayscale cells cut
from the EL images of 44 photovoltaic modules, normalised in size and perspective, 1,508 of them functional.

**Licence: the images and labels are CC BY-NC-SA 4.0** (non-commercial, share-alike; the package's code is
Apache-2.0).  Cite the papers above when you use them.

On disk (the package's ``elpv_dataset/data/`` or any copy in that layout): ``labels.csv``, one cell per line,
whitespace-separated ``images/cellNNNN.png  <defect probability>  <mono|poly>``, and the PNGs under
``images/``.  The probability is the annotators' defect confidence, one of 0, 1/3, 2/3 and 1.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
from lit_diffusion.datamodules.base import ImageDataModule, Split, missing_dataset_error
from lit_diffusion.errors import UserError

LABELS_FILE = "labels.csv"
CELL_TYPES = ("mono", "poly")
"""Cell types, in the order of the ``cell_type`` batch key (0: monocrystalline, 1: polycrystalline)."""
PROBABILITIES = (0.0, 1 / 3, 2 / 3, 1.0)
"""The defect probabilities the annotations take; ``label`` is the index of a cell's, round(3 p)."""


def package_data_dir() -> Path | None:
    """``elpv_dataset/data`` of the installed package, found without importing it."""
    spec = importlib.util.find_spec("elpv_dataset")
    locations = spec.submodule_search_locations if spec is not None else None
    return next((Path(location) / "data" for location in locations or []), None)


def read_labels(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``labels.csv`` → (image paths, defect probabilities float32, cell types as indices of :data:`CELL_TYPES`)."""
    paths, probabilities, types = [], [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3 or fields[2] not in CELL_TYPES:
            raise UserError(f"{path}:{number} is not an ELPV label line 'images/cellNNNN.png <probability> "
                            f"<mono|poly>': {line!r}")
        paths.append(str(path.parent / fields[0]))
        probabilities.append(float(fields[1]))
        types.append(CELL_TYPES.index(fields[2]))
    return np.array(paths), np.array(probabilities, dtype=np.float32), np.array(types, dtype=np.int64)


class ELPVDataModule(ImageDataModule):
    """ELPV solar cells, grey, resized (bicubic, antialiased) from 300 × 300 to ``image_size`` (64 or 128).

    Samples are ``{"image", "label", "proba", "cell_type"}``: ``proba`` the defect probability (float),
    ``label`` its index in :data:`PROBABILITIES` (4 classes), ``cell_type`` 0 for mono- and 1 for
    polycrystalline cells.  ``labels.csv`` is read from ``root`` when given, else from the installed
    ``elpv-dataset`` package.  Training mirrors cells left-right at random (``random_flip``; EL cells have no
    handedness).  The dataset has no test split: ``val_fraction`` of the cells is held out at
    positions fixed by ``seed``.

    Training on the functional cells only (anomaly detection): ``data.classes=[0]`` (defect probability 0;
    ``[0, 1]``: at most 1/3); the validation split keeps every cell, defective ones included.

    Args:
        cell_type: ``mono`` or ``poly`` to keep one type of cell (both splits); None: both.
    """

    dataset_name = "ELPV"
    num_classes = len(PROBABILITIES)

    def __init__(self, *, cell_type: str | None = None, image_size: int = 64, channels: int = 1,
                 random_flip: bool = True, **kwargs: Any):
        if cell_type not in (*CELL_TYPES, None):
            raise UserError(f"data.cell_type must be one of {', '.join(CELL_TYPES)} or null, got {cell_type!r}")
        super().__init__(image_size=image_size, channels=channels, random_flip=random_flip, **kwargs)
        self.cell_type = cell_type

    def labels_file(self) -> Path:
        directory = self.root or package_data_dir()
        path = None if directory is None else directory / LABELS_FILE
        if path is None or not path.is_file():
            raise missing_dataset_error(
                f"ELPV ({LABELS_FILE} and images/)", [path] if path else [],
                "pip install elpv-dataset (the wheel ships the images), or set data.root=/path/to/dir containing "
                f"{LABELS_FILE} and images/ in the package's layout",
            )
        return path

    def load_splits(self) -> tuple[Split, Split | None]:
        paths, probabilities, types = read_labels(self.labels_file())
        if self.cell_type is not None:
            keep = types == CELL_TYPES.index(self.cell_type)
            paths, probabilities, types = paths[keep], probabilities[keep], types[keep]
        labels = np.rint(probabilities * 3).astype(np.int64)
        return (paths, {"label": labels, "proba": probabilities, "cell_type": types}), None
