"""A folder of 2-D medical slices exported as images (PNG), with optional label masks in a parallel folder:

    <root>/images/<case>_<slice>.png     one slice (8- or 16-bit grey, or RGB), e.g. BraTS2021_00000_077.png
    <root>/masks/<case>_<slice>.png      its label map: the raw label values as pixel values (BraTS: 0, 1, 2, 4;
                                         binary masks 0 / 255 with data.label_values=[0,255]), same file name

``<case>`` is the patient id (everything before the last ``_``) and ``<slice>`` the slice number; slices are
ordered by case, then slice number, and split by case.  Without a ``masks/`` folder the samples are ``image``
only; with one, every slice needs its mask.  The keys of the samples: :mod:`lit_diffusion.datamodules.medical`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lit_diffusion.datamodules.base import missing_dataset_error, read_image
from lit_diffusion.datamodules.image_folder import find_images
from lit_diffusion.datamodules.medical import WHERE, LabelMap, MedicalSliceDataModule, SliceDataset
from lit_diffusion.errors import UserError

IMAGES, MASKS = "images", "masks"


def case_and_slice(path: Path) -> tuple[str, int]:
    """``<case>_<slice>.png`` → (case, slice number)."""
    case, _, number = path.stem.rpartition("_")
    if not case or not number.isdigit():
        raise UserError(f"slice file '{path}' is not named <case>_<slice number>.<ext> (e.g. BraTS2021_00000_077.png)")
    return case, int(number)


class ImageSlices(SliceDataset):
    """Slices read from image files in ``mode`` (``L`` or ``RGB``), with mask files or none."""

    def __init__(self, images: Sequence[Path], masks: Sequence[Path] | None, mode: str, label_map: LabelMap,
                 size: int, target: str):
        tumour = None if masks is None else [label_map(np.asarray(read_image(m, "L")), m).any() for m in masks]
        super().__init__(np.array([case_and_slice(p)[0] for p in images]), None if tumour is None else np.array(tumour),
                         label_map, size, target)
        self.images = np.array([str(p) for p in images])
        self.masks = None if masks is None else np.array([str(p) for p in masks])
        self.mode = mode

    def __len__(self) -> int:
        return len(self.images)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray | None, Any]:
        image = np.asarray(read_image(self.images[index], self.mode), dtype=np.float32) / 127.5 - 1
        image = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
        mask = None if self.masks is None else np.asarray(read_image(self.masks[index], "L"))
        return image, mask, self.masks[index] if self.masks is not None else self.images[index]


class SliceFolderDataModule(MedicalSliceDataModule):
    """2-D slices under ``root`` in the layout of the module docstring, resized to ``image_size``."""

    dataset_name = "medical slice folder"

    def __init__(self, *, channels: int = 1, **kwargs: Any):
        super().__init__(channels=channels, **kwargs)

    @property
    def image_channels(self) -> int:
        return self.channels

    @functools.cached_property
    def _index(self) -> dict[str, list[tuple[int, Path, Path | None]]]:
        """Per case: (slice number, image file, mask file or None), sorted by slice number."""
        folder = None if self.root is None else self.root / IMAGES
        files = find_images(folder) if folder is not None and folder.is_dir() else []
        if not files:
            raise missing_dataset_error(
                f"Medical slices ({IMAGES}/<case>_<slice>.png, optional {MASKS}/)", [folder] if folder else [],
                f"{WHERE}; export the axial slices as <case>_<slice>.png into {IMAGES}/ (label maps with the same "
                f"names into {MASKS}/) and set data.root=/path/to/that folder, or read the volumes directly with "
                "data=brats_nifti")
        masks = self.root / MASKS
        index: dict[str, list[tuple[int, Path, Path | None]]] = {}
        for path in files:
            case, number = case_and_slice(path)
            mask = masks / path.relative_to(folder) if masks.is_dir() else None
            if mask is not None and not mask.is_file():
                raise UserError(f"{path} has no mask at {mask}; with a {MASKS}/ folder every slice needs one")
            index.setdefault(case, []).append((number, path, mask))
        return {case: sorted(index[case]) for case in sorted(index)}

    def cases(self) -> list[str]:
        return list(self._index)

    def slices(self, cases: Sequence[str]) -> ImageSlices:
        rows = [row for case in cases for row in self._index[case]]
        masks = [mask for _, _, mask in rows] if (self.root / MASKS).is_dir() else None
        return ImageSlices([image for _, image, _ in rows], masks, "L" if self.channels == 1 else "RGB",
                           self.label_map, self.image_size, self.target)
