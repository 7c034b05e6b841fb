"""2-D slices of medical volumes with per-pixel labels, for anomaly detection and segmentation (BraTS-style).

The Brain Tumor Segmentation challenge (BraTS; Menze et al. 2015, IEEE TMI 34(10); Bakas et al. 2017, Scientific
Data 4; Baid et al. 2021, arXiv:2107.02314 for BraTS 2021) labels every voxel of a skull-stripped, co-registered
multi-modal brain MRI 0 (background / healthy tissue), 1 (necrotic and non-enhancing tumour core), 2 (peritumoral
oedema) or 4 (enhancing tumour); BraTS 2023 renumbers them 0–3.  A :class:`LabelMap` turns the raw values into
contiguous classes (or the whole-tumour mask), and every sample of a slice carries the keys both task families
read:

- ``image`` (C, S, S) in [-1, 1]: the slice, one channel per modality (or the one-hot map, see ``target``);
- ``segmentation`` (S, S) long: the classes (:mod:`lit_diffusion.segment`);
- ``anomaly_mask`` (1, S, S) bool: the whole tumour, every class but background (:mod:`lit_diffusion.anomaly`);
- ``label``: 1 when the slice holds a tumour voxel (at its own resolution, before resizing), 0 when it is
  healthy — so ``data.classes=[0]`` trains on healthy slices only (AnoDDPM's protocol) and
  ``python -m lit_diffusion.anomaly normal_classes=[0]`` scores the held-out patients' slices.

With ``target="segmentation"`` (mask diffusion: SegDiff, Amit et al. 2021; MedSegDiff, Wu et al. 2023) the
one-hot map scaled to {-1, 1} is ``image`` and the MRI slice moves to ``scan``, the condition a concat
embedder feeds to the network.  Slices are split by case (patient): all slices of one patient are in the same
split.  The data cannot be installed here: :data:`WHERE` says where to get them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from lit_diffusion.datamodules.base import ImageDataModule, SampleViews, of_classes
from lit_diffusion.datamodules.pairs import one_of
from lit_diffusion.errors import UserError

BRATS_LABELS = (0, 1, 2, 4)
"""BraTS 2012–2021 voxel labels: background, necrotic / non-enhancing core, oedema, enhancing tumour."""
TARGETS = ("image", "segmentation")
WHERE = ("BraTS cannot be downloaded automatically: register for the RSNA-ASNR-MICCAI BraTS challenge on Synapse "
         "(https://www.synapse.org, BraTS 2021 / 2023 training data) or through the BraTS pages "
         "(https://www.med.upenn.edu/cbica/brats/) and accept the data use agreement")
"""Where the data come from, for the missing-data messages."""


class LabelMap:
    """Raw label values (the first one background) → classes 0 … K-1 in the order given; with ``whole_tumour``
    every non-background value → 1 (K = 2)."""

    def __init__(self, values: Sequence[int], whole_tumour: bool):
        values = [int(v) for v in values]
        if len(values) < 2 or len(set(values)) != len(values) or min(values) < 0:
            raise UserError(f"data.label_values must be at least two distinct non-negative values, background first "
                            f"(BraTS: {list(BRATS_LABELS)}), got {values}")
        self.values, self.whole_tumour = values, whole_tumour
        self.lookup = np.full(max(values) + 1, -1, dtype=np.int64)
        self.lookup[values] = np.arange(len(values))

    @property
    def classes(self) -> int:
        return 2 if self.whole_tumour else len(self.values)

    def __call__(self, raw: np.ndarray, source: Any) -> np.ndarray:
        """The classes (int64) of a raw label map read from ``source`` (named in the error on unknown values)."""
        raw = np.rint(np.asarray(raw)).astype(np.int64)
        unknown = (raw < 0) | (raw >= len(self.lookup))
        unknown[~unknown] = self.lookup[raw[~unknown]] < 0
        if unknown.any():
            raise UserError(f"{source} holds label values {sorted(set(raw[unknown].tolist()))} outside "
                            f"data.label_values={self.values}; set data.label_values to the values its masks use")
        classes = self.lookup[raw]
        return (classes > 0).astype(np.int64) if self.whole_tumour else classes


def resize(image: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(C, H, W) → (C, size, size): ``bilinear`` (antialiased) for intensities, ``nearest-exact`` for labels."""
    if image.shape[-2:] == (size, size):
        return image
    antialias = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(image[None], size=(size, size), mode=mode, **antialias)[0]


class SliceDataset(Dataset):
    """Slices as samples with the keys of the module docstring; subclasses implement :meth:`read`.

    Args:
        cases: per slice, the id of its case (patient).
        tumour: per slice, whether its label map holds a tumour voxel (known before any image is read, so that
            ``data.classes`` can filter); None when the slices have no label maps (samples are ``image`` only).
    """

    def __init__(self, cases: np.ndarray, tumour: np.ndarray | None, label_map: LabelMap, size: int, target: str):
        self.cases = np.asarray(cases)
        self.labels = None if tumour is None else {"label": np.asarray(tumour, dtype=np.int64)}
        self.label_map, self.size, self.target = label_map, size, target

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray | None, Any]:
        """Slice ``index``: float32 (C, H, W) in [-1, 1], its raw label map (H, W) or None, and its source."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, raw, source = self.read(index)
        image = resize(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), self.size, "bilinear")
        image = image.clamp(-1, 1)
        if raw is None:
            return {"image": image}
        classes = torch.from_numpy(self.label_map(raw, source))
        segmentation = resize(classes[None].float(), self.size, "nearest-exact")[0].long()
        sample = {"segmentation": segmentation, "anomaly_mask": (segmentation > 0)[None],
                  "label": int(self.labels["label"][index])}
        if self.target == "image":
            return {"image": image, **sample}
        onehot = F.one_hot(segmentation, self.label_map.classes).permute(2, 0, 1).float() * 2 - 1
        return {"image": onehot, "scan": image, **sample}


class MedicalSliceDataModule(ImageDataModule):
    """Base of the medical slice DataModules: cases (patients) split by ``seed`` — ``val_fraction`` of them
    held out for validation — and their slices as :class:`SliceDataset` samples resized to ``image_size``.

    Subclasses implement :meth:`cases` (sorted case ids), :meth:`slices` (the dataset of some cases' slices) and
    :attr:`image_channels`.  ``classes=[0]`` keeps the healthy training slices only; validation keeps every
    slice.  There is no random flip: a flip of ``image`` alone would not mirror the label maps.

    Args:
        label_values: the raw values of the label maps, background first (BraTS 2021: 0, 1, 2, 4; 2023: 0–3).
        whole_tumour: ``segmentation`` is the binary whole-tumour mask instead of the classes.
        target: ``image`` (the slice is the image) or ``segmentation`` (the one-hot map is, see the module).
        labelled: keep only the first L training slices (after ``classes``: the first training cases' slices in
            slice order), repeated so that an epoch holds at least one batch (None: all).
    """

    segmentation_input = "scan"

    def __init__(self, *, label_values: Sequence[int] = BRATS_LABELS, whole_tumour: bool = False,
                 target: str = "image", labelled: int | None = None, image_size: int = 128, **kwargs: Any):
        self.target = one_of("data.target", target, TARGETS)  # read by image_shape in the base constructor
        self.label_map = LabelMap(label_values, whole_tumour)
        if kwargs.get("random_flip"):
            raise UserError("medical slices need data.random_flip=false (a flip would not mirror the label maps)")
        if labelled is not None and labelled < 1:
            raise UserError(f"data.labelled must be a positive number of training slices or null (all), got {labelled}")
        super().__init__(image_size=image_size, **kwargs)
        self.labelled = labelled

    @property
    def num_classes(self) -> int:
        """Classes of the ``segmentation`` maps (background included)."""
        return self.label_map.classes

    @property
    def image_channels(self) -> int:
        """Channels of the MRI slices."""
        raise NotImplementedError

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, S, S) of the slices, or (classes, S, S) when the segmentation map is the image."""
        channels = self.image_channels if self.target == "image" else self.label_map.classes
        return (channels, self.image_size, self.image_size)

    def cases(self) -> list[str]:
        raise NotImplementedError

    def slices(self, cases: Sequence[str]) -> SliceDataset:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_cases, val_cases = self._hold_out(self.cases())  # positions fixed by seed, over patients
        train = self.slices(list(train_cases))
        if self.classes is not None:
            train = of_classes(train, self.classes, self.dataset_name)
        self.labelled_images = self.labelled or len(train)
        if self.labelled is not None:
            train = self.first_slices(train)
        self.train_set = SampleViews(train, self.pairs, self.seed)
        self.val_set = None if val_cases is None else SampleViews(self.slices(list(val_cases)), self.pairs, self.seed)

    def first_slices(self, train: Dataset) -> Subset:
        """The first ``labelled`` items of ``train``, repeated in order to at least ``batch_size`` items."""
        if self.labelled > len(train):
            raise UserError(f"data.labelled={self.labelled}, but the {self.dataset_name} training split has "
                            f"{len(train)} slices; lower data.labelled or set it to null (all)")
        repeats = math.ceil(self.batch_size / self.labelled)
        return Subset(train, [i % self.labelled for i in range(self.labelled * repeats)])
