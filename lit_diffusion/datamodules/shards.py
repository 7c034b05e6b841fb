"""Image + caption pairs in webdataset tar shards (``<key>.jpg`` or ``.png``/``.webp`` plus ``<key>.txt`` per sample),
for data that does not fit a folder (LAION: Schuhmann et al. 2022; latent diffusion's text-to-image training).

Local shards are indexed once (member offsets, read with ``tarfile``) and read by random access, so they get
everything a folder gets: the epoch-seeded sampler, exact resumption, data-parallel sharding, a held-out
validation split and cached FID references.  Remote shards (``http(s)://``, ``pipe:``, ``s3://`` …; or
``streaming=true``) are streamed with the ``webdataset`` library: shards resampled with replacement, a shuffle
buffer, each process splitting the shard stream by rank; such a run resumes at the step, not at the sample.
"""

from __future__ import annotations

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


def index_shards(shards: Sequence[str]) -> Split:
    """Every sample with an image and a caption in ``shards``: image members and caption texts, in shard order.
    Keys follow webdataset: the member path up to the first dot of its file name."""
    members, captions = [], []
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
                elif ext.lower() == "txt":
                    sample["caption"] = tar.extractfile(info).read().decode("utf-8").strip()
        for sample in found.values():
            if "image" in sample and "caption" in sample:
                members.append(sample["image"])
                captions.append(sample["caption"])
    return ShardImages(members), {CAPTION_KEY: np.array(captions)}


class ToSample:
    """A streamed (image, caption) pair as a training sample."""

    def __init__(self, transform, mode: str):
        self.transform, self.mode = transform, mode

    def __call__(self, pair: tuple) -> dict:
        image, caption = pair
        return {"image": self.transform(image.convert(self.mode)), CAPTION_KEY: caption.strip()}


class WebDatasetDataModule(ImageDataModule):
    """Captioned images in webdataset tar shards (module docstring); samples ``{"image", "caption"}``.

    Args:
        urls: shard paths or URLs, a brace pattern (``/data/laion/{00000..41407}.tar``) or a list; None: every
            ``*.tar`` under ``root``.
        val_urls: validation shards (local); None: ``val_fraction`` of the local samples is held out.
        streaming: stream with the webdataset library even when the shards are local (remote ones always are).
        shuffle_buffer: samples in the streaming shuffle buffer.
        tokenizer_captions: streaming: how many captions of the stream a trained text encoder's tokenizer is
            fitted on.
    """

    dataset_name = "webdataset shards"

    def __init__(self, *, urls: str | list[str] | None = None, val_urls: str | list[str] | None = None,
                 streaming: bool = False, shuffle_buffer: int = 10000, tokenizer_captions: int = 100000,
                 image_size: int = 256, center_crop: bool = True, **kwargs: Any):
        super().__init__(image_size=image_size, center_crop=center_crop, **kwargs)
        self.urls, self.val_urls, self.shuffle_buffer = urls, val_urls, shuffle_buffer
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

    def load_splits(self) -> tuple[Split, Split | None]:
        train = index_shards(self.shards(self.urls))
        if not len(train[0]):
            raise UserError(f"no sample of {self.shards(self.urls)[:3]} has both an image "
                            f"({'/'.join(IMAGE_EXTENSIONS)}) and a .txt caption")
        return train, None if self.val_urls is None else index_shards(self.shards(self.val_urls))

    def stream(self, urls: str | list[str], resampled: bool):
        mode = "L" if self.channels == 1 else "RGB"
        dataset = wds.WebDataset(self.shards(urls), resampled=resampled, shardshuffle=False, seed=self.seed,
                                 nodesplitter=wds.split_by_node, empty_check=False)
        if resampled:
            dataset = dataset.shuffle(self.shuffle_buffer)
        return (dataset.decode("pil").to_tuple(";".join(IMAGE_EXTENSIONS), "txt")
                .map(ToSample(image_transform(self.image_size, self.center_crop), mode)))

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
