"""Images in webdataset tar shards (``<key>.jpg`` or ``.png``/``.webp``, with ``<key>.txt`` captions and/or
``<key>.cls`` class labels), for data that does not fit a folder (LAION: Schuhmann et al. 2022; latent diffusion's
text-to-image training; any image folder after ``python -m lit_diffusion.shard``).

Local shards are indexed once (member offsets, read with ``tarfile``) and read by random access, so they get
everything a folder gets: the epoch-seeded sampler, exact resumption, data-parallel sharding, a held-out
validation split and cached FID references.  Remote shards (``http(s)://``, ``pipe:``, ``s3://`` …; or
``streaming=true``) are streamed with the ``webdataset`` library: shards resampled with replacement, a shuffle
buffer, each process splitting the shard stream by rank; such a run resumes at the step, not at the sample.
"""

from __future__ import annotations

import functools
import io
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

from lit_diffusion.datamodules.base import ImageDataModule, Split, image_transform, missing_dataset_error
from lit_diffusion.datamodules.captions import CAPTION_KEY, split_captions
from lit_diffusion.errors import UserError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
REMOTE = ("http://", "https://", "pipe:", "s3://", "gs://")
LABEL_KEY = "label"
"""The sample key of a ``.cls`` class label (the key class-conditional models read)."""


class Member(NamedTuple):
    shard: str
    offset: int
    size: int


class ShardImages(Sequence):
    """Images stored in tar shards, decoded on access to uint8 arrays (what ``ImageDataset`` reads)."""

    def __init__(self, members: list[Member]):
        self.members = members

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, index: int) -> np.ndarray:
        member = self.members[index]
        with open(member.shard, "rb") as file:
            file.seek(member.offset)
            data = file.read(member.size)
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)


EXTENSIONS = {CAPTION_KEY: "txt", LABEL_KEY: "cls"}
"""The member extension that carries each sample key besides the image."""


def field_value(key: str, raw: bytes | str | int) -> str | int:
    """A caption (stripped text) or a label (int) from a member's bytes or webdataset's decoded value."""
    if key == LABEL_KEY:
        return int(raw)
    return (raw.decode("utf-8") if isinstance(raw, bytes) else raw).strip()


def index_shards(shards: Sequence[str], keys: Sequence[str] = (CAPTION_KEY,)) -> Split:
    """Every sample of ``shards`` with an image and a member for each of ``keys`` (:data:`EXTENSIONS`), in shard
    order: image members, and the ``keys``' values as the split's named values.  Keys follow webdataset: the
    member path up to the first dot of its file name."""
    members, values = [], {key: [] for key in keys}
    key_of = {ext: key for key, ext in EXTENSIONS.items() if key in keys}
    for shard in shards:
        found: dict[str, dict[str, Any]] = {}
        with tarfile.open(shard) as tar:
            for info in tar:
                if not info.isfile():
                    continue
                folder, _, name = info.name.rpartition("/")
                stem, _, ext = name.partition(".")
                sample = found.setdefault(f"{folder}/{stem}", {})
                if ext.lower() in IMAGE_EXTENSIONS:
                    sample["image"] = Member(shard, info.offset_data, info.size)
                elif (key := key_of.get(ext.lower())) is not None:
                    sample[key] = field_value(key, tar.extractfile(info).read())
        for sample in found.values():
            if "image" in sample and all(key in sample for key in keys):
                members.append(sample["image"])
                for key in keys:
                    values[key].append(sample[key])
    return ShardImages(members), {key: np.array(column) for key, column in values.items()} or None


class ToSample:
    """A streamed webdataset sample (decoded) as a training sample: the image, and its caption / label."""

    def __init__(self, transform, mode: str, keys: Sequence[str]):
        self.transform, self.mode, self.keys = transform, mode, keys

    def complete(self, sample: dict) -> bool:
        """Whether the sample has an image and what ``keys`` ask for (incomplete samples are skipped, as when
        indexing local shards)."""
        return (any(ext in sample for ext in IMAGE_EXTENSIONS)
                and all(EXTENSIONS[key] in sample for key in self.keys))

    def __call__(self, sample: dict) -> dict:
        image = next(sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample)
        return {"image": self.transform(image.convert(self.mode)),
                **{key: field_value(key, sample[EXTENSIONS[key]]) for key in self.keys}}


class WebDatasetDataModule(ImageDataModule):
    """Images in webdataset tar shards (module docstring); samples ``{"image", "caption"}`` (with ``captions``),
    ``{"image", "label"}`` (with ``labels``), both, or only ``{"image"}``.

    Args:
        urls: shard paths or URLs, a brace pattern (``/data/laion/{00000..41407}.tar``) or a list; None: every
            ``*.tar`` under ``root``.
        val_urls: validation shards (local); None: ``val_fraction`` of the local samples is held out.
        streaming: stream with the webdataset library even when the shards are local (remote ones always are).
        shuffle_buffer: samples in the streaming shuffle buffer.
        tokenizer_captions: streaming: how many captions of the stream a trained text encoder's tokenizer is
            fitted on.
        captions: read ``<key>.txt`` captions (samples without one are skipped).
        labels: read ``<key>.cls`` class labels (samples without one are skipped); local shards count the
            classes (:attr:`num_classes`).
    """

    dataset_name = "webdataset shards"

    def __init__(self, *, urls: str | list[str] | None = None, val_urls: str | list[str] | None = None,
                 streaming: bool = False, shuffle_buffer: int = 10000, tokenizer_captions: int = 100000,
                 captions: bool = True, labels: bool = False, image_size: int = 256, center_crop: bool = True,
                 **kwargs: Any):
        super().__init__(image_size=image_size, center_crop=center_crop, **kwargs)
        self.urls, self.val_urls, self.shuffle_buffer = urls, val_urls, shuffle_buffer
        self.keys = [key for key, on in ((CAPTION_KEY, captions), (LABEL_KEY, labels)) if on]
        self.tokenizer_captions = tokenizer_captions
        self.streaming = streaming or any(str(u).startswith(REMOTE) for u in self.shard_list(urls))

    def shard_list(self, urls: str | list[str] | None) -> list[str]:
        if urls is None:
            return sorted(str(p) for p in self.root.rglob("*.tar")) if self.root and self.root.is_dir() else []
        return [u for pattern in ([urls] if isinstance(urls, str) else urls) for u in wds.shardlists.expand_urls(pattern)]

    def shards(self, urls: str | list[str] | None) -> list[str]:
        shards = self.shard_list(urls)
        missing = [] if self.streaming else [Path(s) for s in shards if not Path(s).is_file()]
        if not shards or missing:
            raise missing_dataset_error(
                "Webdataset shards (*.tar with <key>.jpg/.png + <key>.txt)",
                missing[:3] or ([self.root] if self.root else []),
                "set data.root=/path/to/dir with the .tar shards or data.urls='/path/{00000..00099}.tar' (or URLs)")
        return shards

    @functools.cached_property
    def _train_index(self) -> Split:
        train = index_shards(self.shards(self.urls), self.keys)
        if not len(train[0]):
            wanted = " and ".join(["an image (" + "/".join(IMAGE_EXTENSIONS) + ")",
                                   *(f"a .{EXTENSIONS[key]} {key}" for key in self.keys)])
            raise UserError(f"no sample of {self.shards(self.urls)[:3]} has {wanted}; set data.captions=false / "
                            "data.labels=true to match what the shards hold")
        return train

    @property
    def num_classes(self) -> int | None:
        """With ``labels`` on local shards: 1 + the largest label; else None."""
        if LABEL_KEY not in self.keys or self.streaming:
            return None
        return int(self._train_index[1][LABEL_KEY].max()) + 1

    def load_splits(self) -> tuple[Split, Split | None]:
        val = None if self.val_urls is None else index_shards(self.shards(self.val_urls), self.keys)
        return self._train_index, val

    def stream(self, urls: str | list[str], resampled: bool):
        mode = "L" if self.channels == 1 else "RGB"
        dataset = wds.WebDataset(self.shards(urls), resampled=resampled, shardshuffle=False, seed=self.seed,
                                 nodesplitter=wds.split_by_node, empty_check=False)
        if resampled:
            dataset = dataset.shuffle(self.shuffle_buffer)
        to_sample = ToSample(image_transform(self.image_size, self.center_crop), mode, self.keys)
        return dataset.select(to_sample.complete).decode("pil").map(to_sample)

    def setup(self, stage: str | None = None) -> None:
        if not self.streaming:
            super().setup(stage)

    def captions(self) -> list[str]:
        """The training split's captions; streaming: the first ``tokenizer_captions`` captions of the shards."""
        if not self.streaming:
            self.setup("fit")
            return split_captions(self.train_set.dataset)
        stream = iter(self.stream(self.urls, resampled=False))
        return [sample[CAPTION_KEY] for _, sample in zip(range(self.tokenizer_captions), stream)]

    def train_dataloader(self) -> DataLoader:
        if not self.streaming:
            return super().train_dataloader()
        return DataLoader(self.stream(self.urls, resampled=True), batch_size=self.batch_size,
                          num_workers=self.num_workers, pin_memory=self.pin_memory, drop_last=True)

    def val_dataloader(self) -> DataLoader | list:
        if not self.streaming:
            return super().val_dataloader()
        if self.val_urls is None:
            return []
        return DataLoader(self.stream(self.val_urls, resampled=False), batch_size=self.batch_size,
                          num_workers=self.num_workers)
