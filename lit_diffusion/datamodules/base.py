"""What every image DataModule shares: the transform, the datasets, the epoch-seeded sampler, the base class.

A concrete DataModule only says where its images are: :meth:`ImageDataModule.load_splits` returns a train
split and, when the dataset has one, a test split (used for validation); each split is a sequence of images
(uint8 arrays or file paths) and their labels or ``None``.  Everything else lives here, including the pair
transforms (:mod:`lit_diffusion.datamodules.pairs`) that add conditioning inputs to each sample.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from lit_diffusion.datamodules.pairs import PairTransform, build_pairs
from lit_diffusion.errors import UserError

Split = tuple[Sequence[Any], Sequence[int] | Mapping[str, Sequence[Any]] | None]
"""Images (uint8 arrays of shape (H, W) or (H, W, C), or image file paths) and their labels, or named per-image
values (each a sample key, ``label`` among them when the images are labeled; e.g. ELPV's defect probabilities),
or None."""


class CenterSquareCrop:
    """Crop a PIL image to the centred square whose side is its shorter edge."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return TF.center_crop(image, [min(image.size)])


def image_transform(image_size: int, center_crop: bool) -> T.Compose:
    """PIL image -> float tensor in [-1, 1]: optional square crop, resize (a no-op at the right size), scale."""
    steps: list[Any] = [CenterSquareCrop()] if center_crop else []
    steps += [
        T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize([0.5], [0.5]),  # [0, 1] -> [-1, 1]: 0 -> -1.0 and 255 -> 1.0 exactly
    ]
    return T.Compose(steps)


SIXTEEN_BIT = frozenset({"I", "I;16", "I;16B", "I;16L"})
"""PIL modes of 16-bit grayscale files, which ``convert`` would clip to 255 instead of scaling."""


def read_image(path: str | Path, mode: str) -> Image.Image:
    """The image file at ``path`` in PIL ``mode`` (16-bit grayscale scaled to 8 bits); a file that cannot be read
    (corrupt, truncated, not an image) is a :class:`UserError` naming it."""
    try:
        with Image.open(path) as file:
            if file.mode in SIXTEEN_BIT:
                return Image.fromarray((np.asarray(file, dtype=np.float64) / 257).round().astype(np.uint8)).convert(mode)
            return file.convert(mode)
    except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for broken files
        raise UserError(f"cannot read the image '{path}' ({err}); remove or replace the file") from err


class ImageDataset(Dataset):
    """Images with optional labels as sample dicts ``{"image": (C, H, W) in [-1, 1], "label": int}``; with
    ``labels`` a mapping of named per-image values, each name is a sample key (numpy values batch as tensors of
    their dtype)."""

    def __init__(self, images: Sequence[Any], labels: Sequence[int] | Mapping[str, Sequence[Any]] | None, mode: str,
                 transform: T.Compose):
        for name, values in (labels.items() if isinstance(labels, Mapping) else [("labels", labels)]):
            if values is not None and len(values) != len(images):
                raise ValueError(f"{len(images)} images but {len(values)} {name}")
        self.images, self.labels, self.mode, self.transform = images, labels, mode, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.images[index]
        if isinstance(item, (str, Path)):
            image = read_image(item, self.mode)
        else:
            image = Image.fromarray(item).convert(self.mode)
        sample = {"image": self.transform(image)}
        if isinstance(self.labels, Mapping):
            sample |= {name: values[index] for name, values in self.labels.items()}
        elif self.labels is not None:
            sample["label"] = int(self.labels[index])
        return sample


def derived_seed(*entropy: int) -> int:
    """A 64-bit seed that depends only on ``entropy`` (numpy's ``SeedSequence``: well mixed, so nearby
    inputs such as consecutive epochs or items give unrelated streams)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, np.uint64)[0])


class SampleViews(Dataset):
    """The samples of ``dataset`` as a model sees them: views of each item, plus the keys of the pair transforms.

    With ``num_views=2`` index ``i`` is item ``i`` and index ``len + i`` is item ``i`` mirrored left-right:
    random flipping is then the sampler's choice of view, so it is as reproducible as the shuffle order (a
    flip drawn inside a worker would depend on worker state, which a resumed run does not restore).  The
    ``pairs`` (:mod:`lit_diffusion.datamodules.pairs`) then run in order on the possibly mirrored sample,
    each adding its keys, with one ``torch.Generator`` per item seeded from ``(seed, item)``: a pair is
    aligned with its image, and an item's random draws do not depend on epoch, view, worker or batch.
    """

    def __init__(self, dataset: Dataset, pairs: Sequence[PairTransform] = (), seed: int = 0, num_views: int = 1):
        self.dataset, self.pairs, self.seed, self.num_views = dataset, tuple(pairs), seed, num_views

    def __len__(self) -> int:
        return self.num_views * len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        view, item = divmod(index, len(self.dataset))
        sample = self.dataset[item]
        if view:
            sample = {**sample, "image": sample["image"].flip(-1)}
        if self.pairs:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, item))
            for pair in self.pairs:
                sample = {**sample, **pair(sample, generator)}
        return sample


class EpochShuffleSampler(DistributedSampler):
    """Visits each of ``num_items`` items once per epoch in an order that depends only on ``(seed, epoch)``.

    The order of epoch ``e`` is a permutation drawn from a ``torch.Generator`` seeded with ``seed + e``; with
    ``num_views > 1`` the same generator then picks a view per item and the sampler yields
    ``view * num_items + item`` (see :class:`SampleViews`).  :attr:`generator` is meant for the
    DataLoader (worker seeds) and is reseeded from ``(seed, epoch)`` too.  Lightning calls :meth:`set_epoch`
    before each epoch; :attr:`start` skips the first items of the next pass once (mid-epoch resumption).

    **Several processes** (``num_replicas > 1``, data-parallel training): every process computes the same
    epoch order and process ``rank`` takes every ``num_replicas``-th item of it, starting at its rank; the
    order is cut to a multiple of ``num_replicas`` first.  So the processes' parts are disjoint, their union
    is the epoch, and with per-process batches of B and the loader's ``drop_last``, optimizer step k sees
    exactly the items of a one-process step k with batches of ``num_replicas × B`` (positions
    ``[k R B, (k+1) R B)`` of the order), and the same ⌊N / (R B)⌋ steps per epoch: the data order depends on
    the global batch size only, not on the number of processes or of loader workers (the sampler runs in the
    main process).  With one process the order is the whole permutation, as it always was.  :attr:`start`
    counts items of the epoch's order consumed by all processes together.

    It is a :class:`~torch.utils.data.DistributedSampler` so that Lightning sees a sampler that already shards
    and does not wrap it in its ``DistributedSamplerWrapper`` (which would reshuffle our order with its own
    seed, never forward ``set_epoch`` and hide :attr:`start`); this works with every trainer configuration.
    """

    def __init__(self, num_items: int, seed: int, num_views: int = 1, num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, num_replicas={num_replicas})")
        super().__init__(range(num_items), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.num_items, self.seed, self.num_views = num_items, seed, num_views
        self.generator = torch.Generator()
        self.epoch = self.start = 0
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch``; a pending :attr:`start` only survives for the same epoch."""
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch
        self.generator.manual_seed(derived_seed(self.seed, epoch))

    def order(self) -> torch.Tensor:
        """All indices of the current epoch, in order (the same in every process)."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_items, generator=generator)
        if self.num_views > 1:
            order += self.num_items * torch.randint(self.num_views, (self.num_items,), generator=generator)
        return order

    def shard(self, start: int = 0) -> torch.Tensor:
        """This process's part of the current epoch's order from global position ``start`` on."""
        count = (self.num_items - start) // self.num_replicas
        first = start + self.rank
        return self.order()[first:first + count * self.num_replicas:self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        yield from self.shard(start).tolist()

    def __len__(self) -> int:
        """Items per process in a whole epoch."""
        return self.num_items // self.num_replicas


class ResumableDataLoader(DataLoader):
    """A DataLoader over an :class:`EpochShuffleSampler` whose position Lightning checkpoints and restores.

    Lightning saves :meth:`state_dict` with a checkpoint and calls :meth:`load_state_dict` when it resumes
    mid-epoch, so the resumed run sees exactly the batches the interrupted one had not seen yet.  Iteration
    starts lazily at the first batch, i.e. after Lightning's ``set_epoch``, even with worker processes.  In a
    multi-process run every process counts its own batches (the same number in each) and the state also
    records the position in the epoch's order, so that a run resumed on another number of processes continues
    at the same place of the epoch (each item once; the same batches need the same global batch size).
    """

    sampler: EpochShuffleSampler

    def _items_per_batch(self) -> int:
        """Items of the epoch's order that one batch consumes in all processes together."""
        sampler = self.sampler
        if not isinstance(sampler, EpochShuffleSampler):
            raise TypeError(f"ResumableDataLoader needs an EpochShuffleSampler, got {type(sampler).__name__} (was "
                            "it wrapped by a distributed sampler? EpochShuffleSampler shards by rank itself)")
        return self.batch_size * sampler.num_replicas

    def __iter__(self) -> Iterator[Any]:
        self._batches_done = self.sampler.start // self._items_per_batch()
        for batch in super().__iter__():
            self._batches_done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The epoch and the number of its batches already handed out (by each process); with several
        processes also ``items_done``, the position reached in the epoch's order by all of them together."""
        state = {"epoch": self.sampler.epoch, "batches_done": getattr(self, "_batches_done", 0)}
        if self.sampler.num_replicas > 1:
            state["items_done"] = state["batches_done"] * self._items_per_batch()
        return state

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Continue epoch ``state_dict["epoch"]`` after its first ``state_dict["batches_done"]`` batches (after
        its first ``items_done`` items when the state has them, whatever the number of processes now)."""
        self.sampler.set_epoch(state_dict["epoch"])
        self.sampler.start = state_dict.get("items_done", state_dict["batches_done"] * self.batch_size)


def item_labels(dataset: Dataset) -> np.ndarray | None:
    """The labels of a dataset's items, read through :class:`SampleViews` (one view) and subsets without
    loading any image; None when it has none."""
    if isinstance(dataset, SampleViews) and dataset.num_views == 1:
        return item_labels(dataset.dataset)
    if isinstance(dataset, Subset):
        labels = item_labels(dataset.dataset)
        return None if labels is None else labels[np.asarray(dataset.indices, dtype=np.int64)]
    labels = getattr(dataset, "labels", None)
    labels = labels.get("label") if isinstance(labels, Mapping) else labels
    return None if labels is None else np.asarray(labels)


def of_classes(dataset: Dataset, classes: Sequence[int], name: str) -> Subset:
    """The items of ``dataset`` whose label is one of ``classes``."""
    labels = item_labels(dataset)
    if labels is None:
        raise UserError(f"data.classes={list(classes)} selects by label, but {name} has no labels; set "
                        "data.classes=null")
    keep = np.flatnonzero(np.isin(labels, list(classes)))
    if len(keep) == 0:
        raise UserError(f"data.classes={list(classes)}: {name} has no training image of these classes (its labels "
                        f"are {sorted(set(labels.tolist()))})")
    return Subset(dataset, keep.tolist())


def missing_dataset_error(dataset: str, looked_in: Sequence[Path], how_to_fix: str) -> UserError:
    """One message: which dataset is missing, every absolute path that was searched, how to provide it."""
    places = ", ".join(str(Path(path).absolute()) for path in looked_in) or "nowhere (no data.root set)"
    return UserError(f"{dataset} not found. Looked in: {places}. To fix: {how_to_fix}")


class ImageDataModule(lightning.LightningDataModule):
    """Base of the image DataModules: batches are ``{"image": (B, C, H, W) in [-1, 1], "label": (B,)}``.

    Subclasses implement :meth:`load_splits` (and :meth:`download_data` when they can download); they may set
    :attr:`dataset_name` and :attr:`num_classes`.  Their constructors declare only their own arguments and
    the defaults they change, and pass every other keyword on to this one.  Without a test split,
    ``val_fraction`` of the train split is held out for validation, chosen by ``seed``; with one, the test
    split is the validation set.

    ``pairs`` adds conditioning inputs for image-to-image tasks to every sample of :attr:`train_set` and
    :attr:`val_set` (hence to their batches): pair transforms of :mod:`lit_diffusion.datamodules.pairs`,
    computed after the random flip, with random draws fixed per ``(seed, item)`` (see :class:`SampleViews`).
    It is a dict of named configs (or a list, or instances); on the command line add one by name, change it,
    or switch it off with ``null``::

        +data.pairs.low_res._target_=lit_diffusion.datamodules.pairs.LowResolution +data.pairs.low_res.factor=4
        +data.pairs.mask._target_=lit_diffusion.datamodules.pairs.Mask +data.pairs.mask.kind=box
        data.pairs.low_res=null

    which gives batches with ``low_res`` (B, C, H, W) and ``mask`` (B, 1, H, W), ``masked_image`` (B, C, H, W).

    ``classes`` keeps only the training images of these labels (one-class training for anomaly detection, e.g.
    ``data.classes=[3]``: MNIST's threes); validation keeps every class.
    """

    dataset_name = "dataset"
    num_classes: int | None = None
    """How many classes the labels count, or None for unlabeled images."""
    segmentation_input: str | None = None
    """Segmentation DataModules (samples with a ``segmentation`` label map; ``num_classes`` counts its classes):
    the key of the segmented image when ``target="segmentation"`` makes the one-hot map the ``image``; None for
    the others.  They also take ``labelled`` (keep the first L training images) and, after :meth:`setup`, count
    the distinct training images — the first items of :attr:`train_set`, the rest repeat them — in
    ``labelled_images`` (:mod:`lit_diffusion.segment`)."""

    def __init__(
        self,
        root: str | None = None,
        download: bool = False,
        image_size: int = 32,
        channels: int = 3,
        batch_size: int = 64,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        random_flip: bool = False,
        center_crop: bool = False,
        seed: int = 0,
        pin_memory: bool = False,
        pairs: Mapping[str, Any] | Sequence[Any] | None = None,
        classes: Sequence[int] | None = None,
    ):
        super().__init__()
        if channels not in (1, 3):
            raise UserError(f"data.channels must be 1 or 3, got {channels}")
        if not 0 <= val_fraction < 1:
            raise UserError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        self.root = None if root is None else Path(root).expanduser().absolute()
        self.download, self.image_size, self.channels = download, image_size, channels
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.val_fraction, self.random_flip, self.center_crop = val_fraction, random_flip, center_crop
        self.seed = seed
        self.pairs = build_pairs(pairs, self.image_shape)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.train_set: SampleViews | None = None
        self.val_set: SampleViews | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image in a batch."""
        return (self.channels, self.image_size, self.image_size)

    def load_splits(self) -> tuple[Split, Split | None]:
        """Return the train split and the test split (``None`` when the dataset has none)."""
        raise NotImplementedError

    def download_data(self) -> None:
        """Download the dataset into ``root`` (only called when ``download=True``)."""
        raise UserError(f"{self.dataset_name} cannot be downloaded: set data.download=false")

    def prepare_data(self) -> None:
        if self.download:
            self.download_data()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, test = self.load_splits()
        mode = "L" if self.channels == 1 else "RGB"
        transform = image_transform(self.image_size, self.center_crop)
        train_set = ImageDataset(*train, mode, transform)
        if test is None:
            train_set, val_set = self._hold_out(train_set)
        else:
            val_set = ImageDataset(*test, mode, transform)
        if self.classes is not None:
            train_set = of_classes(train_set, self.classes, self.dataset_name)
        self.train_set = SampleViews(train_set, self.pairs, self.seed)
        self.val_set = None if val_set is None else SampleViews(val_set, self.pairs, self.seed)
        if len(self.train_set) < self.batch_size:
            raise UserError(
                f"{self.dataset_name}: the training split has {len(self.train_set)} images, fewer than "
                f"data.batch_size={self.batch_size}; lower data.batch_size or add images"
            )

    def _hold_out(self, dataset: Dataset) -> tuple[Dataset, Dataset | None]:
        """Split off ``val_fraction`` of ``dataset`` at random positions fixed by ``seed``."""
        num_val = round(len(dataset) * self.val_fraction)
        if num_val == 0:
            return dataset, None
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed)).tolist()
        return Subset(dataset, order[num_val:]), Subset(dataset, order[:num_val])

    def data_parallel(self) -> tuple[int, int]:
        """(number of data-parallel processes, this process's rank) of the trainer, (1, 0) without one."""
        trainer = getattr(self, "trainer", None)
        kwargs = (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}
        return kwargs.get("num_replicas", 1), kwargs.get("rank", 0)

    def train_dataloader(self) -> ResumableDataLoader:
        """Training batches of ``batch_size`` per process: the process's part of each epoch's order
        (:class:`EpochShuffleSampler`), incomplete batches dropped, position checkpointed."""
        self.setup()
        dataset = SampleViews(self.train_set.dataset, self.pairs, self.seed, num_views=2 if self.random_flip else 1)
        num_replicas, rank = self.data_parallel()
        sampler = EpochShuffleSampler(len(self.train_set), self.seed, num_views=dataset.num_views,
                                      num_replicas=num_replicas, rank=rank)
        if len(sampler) < self.batch_size:
            raise UserError(
                f"{self.dataset_name}: the training split has {len(self.train_set)} images, {len(sampler)} per "
                f"process for {num_replicas} processes, fewer than data.batch_size={self.batch_size}; lower "
                "data.batch_size or add images"
            )
        return ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            generator=sampler.generator,
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches in a fixed order; ``[]`` (no validation) when ``val_fraction`` holds out nothing."""
        self.setup()
        if self.val_set is None:
            return []
        return DataLoader(
            self.val_set,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
