"""BraTS NIfTI volumes sliced on the fly (nibabel, an optional dependency: ``pip install nibabel``), in the layout
of the BraTS 2021 training archive:

    <root>/<case>/<case>_t1.nii.gz  <case>_t1ce.nii.gz  <case>_t2.nii.gz  <case>_flair.nii.gz  <case>_seg.nii.gz

(BraTS 2023: ``separator: "-"``, ``modalities: [t1n, t1c, t2w, t2f]``, ``label_values: [0, 1, 2, 3]``; ``.nii``
works as well as ``.nii.gz``.)  The chosen ``modalities`` are the channels, ``seg`` the label map.  Axial slices
``volume[:, :, k]`` are taken as stored (no reorientation; BraTS volumes are 240 × 240 × 155 in LPS), optionally
within ``slice_range`` and, with ``min_brain_fraction``, only where the brain — the voxels that are non-zero in
some modality (BraTS is skull-stripped, background 0) — covers more than that fraction of the slice.

Intensities are normalised per volume and modality: clipped to the ``percentiles`` of its brain voxels and
scaled linearly to [-1, 1] (background → -1).  :meth:`NiftiSlices.index` reads every volume once at setup (for
these statistics, the brain and the tumour flags); samples then read one slice of each file through nibabel's
array proxy — memory-mapped for ``.nii``, decompressed up to the slice for ``.nii.gz`` (gunzip the files, or
export PNG slices for :mod:`lit_diffusion.datamodules.medical_slices`, when loading is the bottleneck).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lit_diffusion.datamodules.base import missing_dataset_error
from lit_diffusion.datamodules.medical import WHERE, LabelMap, MedicalSliceDataModule, SliceDataset
from lit_diffusion.errors import UserError

MODALITIES = ("t1", "t1ce", "t2", "flair")
"""The BraTS 2012–2021 modalities (file suffixes)."""
EXTENSIONS = (".nii.gz", ".nii")


def require_nibabel():
    """The nibabel module, or one :class:`UserError` saying how to install it (an optional dependency)."""
    try:
        import nibabel as module
    except ImportError as err:
        raise UserError("reading NIfTI volumes needs nibabel: pip install nibabel (or pip install "
                        "'lit_diffusion[medical]')") from err
    return module


def load(path: Path):
    """The NIfTI image at ``path`` (header and array proxy; no voxels read yet), checked to be 3-D."""
    try:
        image = require_nibabel().load(str(path))
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError, zlib errors on broken files
        raise UserError(f"cannot read the NIfTI file '{path}' ({err}); remove or replace it") from err
    if len(image.shape) != 3:
        raise UserError(f"'{path}' has shape {image.shape}; a BraTS volume is 3-D (x, y, axial slices)")
    return image


def clip_range(volume: np.ndarray, brain: np.ndarray, percentiles: Sequence[float], path: Path) -> tuple[float, float]:
    """The intensities at ``percentiles`` of the volume's brain voxels."""
    if not brain.any():
        raise UserError(f"'{path}' has no brain: every voxel is 0")
    low, high = np.percentile(volume[brain], list(percentiles))
    return float(low), float(max(high, low + 1e-6))


def normalise(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to [low, high] and scale linearly to [-1, 1] (in float64, so that the ends map to ±1 exactly)."""
    return (np.clip(values.astype(np.float64), low, high) - low) / (high - low) * 2 - 1


class NiftiSlices(SliceDataset):
    """The kept axial slices of some cases; ``files[c]`` lists case c's modality files, then its seg file."""

    def __init__(self, files: Sequence[Sequence[Path]], *, percentiles: Sequence[float],
                 slice_range: Sequence[int] | None, min_brain_fraction: float | None, label_map: LabelMap,
                 size: int, target: str):
        self.files = [list(case) for case in files]
        rows, tumour, self.ranges = [], [], []
        for case, paths in enumerate(self.files):
            kept, flags, ranges = self.index(paths, percentiles, slice_range, min_brain_fraction, label_map)
            rows += [(case, k) for k in kept]
            tumour += flags
            self.ranges.append(ranges)
        self.rows = np.array(rows, dtype=np.int64).reshape(-1, 2)
        cases = np.array([self.files[case][0].parent.name for case, _ in rows])
        super().__init__(cases, np.array(tumour, dtype=bool), label_map, size, target)

    @staticmethod
    def index(paths: Sequence[Path], percentiles: Sequence[float], slice_range: Sequence[int] | None,
              min_brain_fraction: float | None, label_map: LabelMap) -> tuple[list[int], list[bool], list]:
        """One case: its kept slice numbers, whether each holds tumour, and each modality's clip range."""
        images = [load(path) for path in paths]
        shapes = {image.shape for image in images}
        if len(shapes) != 1:
            raise UserError(f"the volumes of one case differ in shape: {dict(zip(map(str, paths), shapes))}")
        volumes = [np.asarray(image.dataobj, dtype=np.float32) for image in images[:-1]]
        brain = np.any([volume != 0 for volume in volumes], axis=0)
        ranges = [clip_range(volume, brain, percentiles, path) for volume, path in zip(volumes, paths)]
        depth = brain.shape[2]
        first, last = slice_range if slice_range is not None else (0, depth)
        kept = np.arange(max(first, 0), min(last, depth))
        if min_brain_fraction is not None:
            kept = kept[brain[:, :, kept].mean(axis=(0, 1)) > min_brain_fraction]
        tumour = label_map(np.asarray(images[-1].dataobj), paths[-1])[:, :, kept].any(axis=(0, 1))
        return kept.tolist(), tumour.tolist(), ranges

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, Any]:
        case, k = self.rows[index]
        paths = self.files[case]
        image = np.stack([normalise(np.asarray(load(path).dataobj[:, :, k], dtype=np.float32), *clip)
                          for path, clip in zip(paths[:-1], self.ranges[case])])
        return image, np.asarray(load(paths[-1]).dataobj[:, :, k]), f"{paths[-1]} (slice {k})"


class BraTSNiftiDataModule(MedicalSliceDataModule):
    """BraTS cases under ``root`` (see the module docstring), their axial slices resized to ``image_size``.

    ``channels`` must equal the number of ``modalities`` (it is what the model configs read).

    Args:
        modalities: the file suffixes read as channels, in order.
        seg: the suffix of the label volume.
        separator: between the case id and the suffix in the file names (``_``; BraTS 2023: ``-``).
        percentiles: the clip range of the normalisation, percentiles of the brain voxels.
        slice_range: [first, last) axial slices to keep; None: all.
        min_brain_fraction: keep slices whose brain covers more than this fraction (0.0: skip empty slices);
            None keeps every slice.
    """

    dataset_name = "BraTS (NIfTI)"

    def __init__(self, *, modalities: Sequence[str] = MODALITIES, seg: str = "seg", separator: str = "_",
                 percentiles: Sequence[float] = (1.0, 99.0), slice_range: Sequence[int] | None = None,
                 min_brain_fraction: float | None = 0.0, channels: int = 4, **kwargs: Any):
        self.modalities = [str(m) for m in modalities]
        if not self.modalities or len(set(self.modalities)) != len(self.modalities) or channels != len(modalities):
            raise UserError(f"data.modalities must be distinct names and data.channels their number; got "
                            f"modalities={self.modalities}, channels={channels}")
        if len(percentiles) != 2 or not 0 <= percentiles[0] < percentiles[1] <= 100:
            raise UserError(f"data.percentiles must be [low, high] with 0 <= low < high <= 100, got "
                            f"{list(percentiles)}")
        if slice_range is not None and (len(slice_range) != 2 or not 0 <= slice_range[0] < slice_range[1]):
            raise UserError(f"data.slice_range must be [first, last) with 0 <= first < last, or null; got "
                            f"{list(slice_range)}")
        super().__init__(channels=1, **kwargs)  # the base's channels are PIL modes (1 or 3); ours are modalities
        self.channels = channels
        self.seg, self.separator = seg, separator
        self.percentiles, self.min_brain_fraction = [float(p) for p in percentiles], min_brain_fraction
        self.slice_range = None if slice_range is None else [int(s) for s in slice_range]

    @property
    def image_channels(self) -> int:
        return len(self.modalities)

    def file(self, case: str, suffix: str) -> Path:
        """``<root>/<case>/<case><separator><suffix>.nii.gz`` (or ``.nii``); a UserError naming it when absent."""
        stem = self.root / case / f"{case}{self.separator}{suffix}"
        found = [Path(f"{stem}{ext}") for ext in EXTENSIONS if Path(f"{stem}{ext}").is_file()]
        if not found:
            raise UserError(f"BraTS case '{case}' has no {suffix} volume: expected {stem}.nii.gz (or .nii)")
        return found[0]

    @functools.cached_property
    def _cases(self) -> list[str]:
        folders = sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root and self.root.is_dir() else []
        cases = [p.name for p in folders if any(p.glob(f"{p.name}{self.separator}*.nii*"))]
        if not cases:
            example = f"<case>/<case>{self.separator}{{{','.join(self.modalities)},{self.seg}}}.nii.gz"
            raise missing_dataset_error(
                f"BraTS NIfTI volumes ({example})", [self.root] if self.root else [],
                f"{WHERE}; extract the training archive and set data.root=/path/to/the folder holding one "
                f"subfolder per case ({example})")
        return cases

    def cases(self) -> list[str]:
        return self._cases

    def slices(self, cases: Sequence[str]) -> NiftiSlices:
        files = [[self.file(case, suffix) for suffix in (*self.modalities, self.seg)] for case in cases]
        return NiftiSlices(files, percentiles=self.percentiles, slice_range=self.slice_range,
                           min_brain_fraction=self.min_brain_fraction, label_map=self.label_map,
                           size=self.image_size, target=self.target)
