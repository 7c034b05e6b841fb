"""Captioned DataModules on files written here in their real on-disk formats."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from lit_diffusion.datamodules import CaptionedFolderDataModule, WebDatasetDataModule
from lit_diffusion.datamodules.captions import training_captions
from lit_diffusion.errors import UserError


def write_images(folder, count, start=0):
    """PNGs whose grey level encodes their index, and their captions."""
    folder.mkdir(parents=True, exist_ok=True)
    names, captions = [], []
    for i in range(start, start + count):
        Image.fromarray(np.full((12, 10, 3), 10 * i, dtype=np.uint8)).save(folder / f"{i:03d}.png")
        names.append(f"{i:03d}.png")
        captions.append(f"image number {i}")
    return names, captions


def index_of(image) -> int:
    """The index a written image encodes (grey level / 10), from a sample in [-1, 1]."""
    return round(((image.mean().item() + 1) * 127.5) / 10)


def samples(split) -> list[dict]:
    return [split[i] for i in range(len(split))] if split is not None else []


def check(datamodule, expected: dict[int, str], val: int | None = None):
    datamodule.setup("fit")
    seen = {}
    for split in (datamodule.train_set, datamodule.val_set):
        for sample in samples(split):
            seen.setdefault(index_of(sample["image"]), set()).add(sample["caption"])
    assert {i: c for i, cs in seen.items() for c in cs} == expected
    if val is not None:
        assert len(datamodule.val_set) == val
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (2, 3, 8, 8) and len(batch["caption"]) == 2
    assert all(c == expected[index_of(image)] for c, image in zip(batch["caption"], batch["image"]))


KW = {"image_size": 8, "batch_size": 2, "val_fraction": 0.25}


def test_imagefolder_metadata_jsonl(tmp_path):
    names, captions = write_images(tmp_path, 8)
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "text": c}) + "\n"
                                                     for n, c in zip(names, captions)))
    datamodule = CaptionedFolderDataModule(root=str(tmp_path), **KW)
    check(datamodule, dict(enumerate(captions)), val=2)
    assert sorted(training_captions(datamodule)) == sorted(c for c in captions
                                                           if c not in {s["caption"] for s in samples(datamodule.val_set)})


def test_imagefolder_csv_in_train_and_test_folders(tmp_path):
    expected = {}
    for split, start in (("train", 0), ("test", 8)):
        names, captions = write_images(tmp_path / split, 8 if split == "train" else 3, start)
        with (tmp_path / split / "metadata.csv").open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerows([["file_name", "caption"], *zip(names, captions)])
        expected |= dict(zip(range(start, start + len(names)), captions))
    check(CaptionedFolderDataModule(root=str(tmp_path), caption_column="caption", **KW), expected, val=3)
    with pytest.raises(UserError, match="data.caption_column"):
        CaptionedFolderDataModule(root=str(tmp_path), **KW).setup()


def test_coco_captions(tmp_path):
    expected = {}
    for split, start in (("train2017", 0), ("val2017", 8)):
        names, _ = write_images(tmp_path / split, 8 if split.startswith("train") else 2, start)
        images = [{"id": 100 + start + k, "file_name": n} for k, n in enumerate(names)]
        annotations = [{"id": j, "image_id": image["id"], "caption": f" {image['file_name']} caption {j} "}
                       for image in images for j in range(2)]
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / f"captions_{split}.json").write_text(json.dumps({"images": images,
                                                                                  "annotations": annotations}))
    datamodule = CaptionedFolderDataModule(root=str(tmp_path), **KW)
    datamodule.setup()
    assert len(datamodule.train_set) == 16 and len(datamodule.val_set) == 2  # every training caption; val: first
    assert {s["caption"] for s in samples(datamodule.val_set)} == {"008.png caption 0", "009.png caption 0"}
    assert all(s["caption"].startswith(f"{index_of(s['image']):03d}.png caption") for s in samples(datamodule.train_set))


def test_webdataset_shards_indexed_and_streamed(tmp_path):
    expected = {}
    for shard in range(2):
        with wds.TarWriter(str(tmp_path / f"shard-{shard:05d}.tar")) as sink:
            for k in range(5):
                i = 5 * shard + k
                image = Image.fromarray(np.full((12, 10, 3), 10 * i, dtype=np.uint8))
                sink.write({"__key__": f"sample{i:04d}", "png": image, "txt": f"shard {shard} item {k}"})
                expected[i] = f"shard {shard} item {k}"
        sink.close()
    (tmp_path / "extra").mkdir()
    check(WebDatasetDataModule(root=str(tmp_path), **KW), expected)
    streamed = WebDatasetDataModule(urls=str(tmp_path / "shard-{00000..00001}.tar"), streaming=True, **KW)
    batch = next(iter(streamed.train_dataloader()))
    assert batch["image"].shape == (2, 3, 8, 8)
    assert all(c == expected[index_of(image)] for c, image in zip(batch["caption"], batch["image"]))
    assert sorted(streamed.captions()) == sorted(expected.values())
    with pytest.raises(UserError, match="Webdataset shards"):
        WebDatasetDataModule(root=str(tmp_path / "extra"), **KW).setup()
