"""An image folder → webdataset shards (``python -m lit_diffusion.shard``) → ``data=webdataset``: the shards hold
the folder's bytes, labels and captions; the DataModule reads them locally and streamed; a conversion that
fails leaves nothing behind."""

from __future__ import annotations

import io
import sys
import tarfile
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from lit_diffusion.datamodules import WebDatasetDataModule
from lit_diffusion.datamodules import shard_writer
from lit_diffusion.datamodules.shard_writer import write_shards
from lit_diffusion.errors import UserError
from lit_diffusion.shard import main


def write_folder(root) -> dict[str, tuple[int, int]]:
    """Class folders a/ (PNG, 4 with captions) and b/ (BMP): file name → (grey level, class)."""
    expected = {}
    for label, (name, ext) in enumerate((("a", "png"), ("b", "bmp"))):
        (root / name).mkdir(parents=True)
        for i in range(5):
            grey = 20 * (5 * label + i) + 10
            Image.fromarray(np.full((12, 10, 3), grey, dtype=np.uint8)).save(root / name / f"{i}.{ext}")
            if ext == "png" and i < 4:
                (root / name / f"{i}.txt").write_text(f"grey {grey}")
            expected[f"{name}/{i}.{ext}"] = (grey, label)
    return expected


def members(shards) -> dict[str, bytes]:
    out = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            out |= {info.name: tar.extractfile(info).read() for info in tar if info.isfile()}
    return out


def grey(image) -> int:
    return round((image.mean().item() + 1) * 127.5)


def test_entry_point_writes_the_folder_as_shards(tmp_path, capsys):
    expected = write_folder(tmp_path / "folder")
    with mock.patch.object(sys, "argv", ["shard", f"root={tmp_path / 'folder'}", f"out={tmp_path / 'shards'}",
                                         "labels=true", "max_count=3"]):
        main()
    assert "wrote 4 shard(s)" in capsys.readouterr().out
    shards = sorted((tmp_path / "shards").glob("shard-*.tar"))
    assert [s.name for s in shards] == [f"shard-{i:06d}.tar" for i in range(4)]
    stored = members(shards)
    files = sorted(expected)  # the writer's order: sorted paths, keys 0 … 9
    for index, name in enumerate(files):
        key = f"{index:09d}"
        assert stored[f"{key}.cls"] == str(expected[name][1]).encode()
        if name.endswith(".png"):  # bytes unchanged
            assert stored[f"{key}.png"] == (tmp_path / "folder" / name).read_bytes()
        else:  # BMP re-encoded losslessly as PNG
            assert f"{key}.bmp" not in stored
            assert np.asarray(Image.open(io.BytesIO(stored[f"{key}.png"]))).mean() == expected[name][0]
        caption = (tmp_path / "folder" / name).with_suffix(".txt")
        assert stored.get(f"{key}.txt") == (caption.read_bytes() if caption.exists() else None)


@pytest.mark.parametrize("streaming", [False, True])
def test_shards_read_back_with_labels_and_captions(tmp_path, streaming):
    expected = write_folder(tmp_path / "folder")
    write_shards(tmp_path / "folder", tmp_path / "shards", labels=True, max_count=4)
    label_of = {grey: label for grey, label in expected.values()}
    kw = {"root": str(tmp_path / "shards"), "image_size": 8, "batch_size": 10, "val_fraction": 0.0,
          "random_flip": False, "streaming": streaming}
    datamodule = WebDatasetDataModule(captions=False, labels=True, **kw)
    if not streaming:
        datamodule.setup("fit")
        assert datamodule.num_classes == 2 and len(datamodule.train_set) == 10
    batch = next(iter(datamodule.train_dataloader()))
    greys = [grey(image) for image in batch["image"]]
    assert [label_of[g] for g in greys] == batch["label"].tolist()
    if not streaming:  # one epoch: every image once
        assert sorted(greys) == sorted(g for g, _ in expected.values())
    captioned = WebDatasetDataModule(captions=True, **{**kw, "batch_size": 4})  # only the 4 captioned images
    batch = next(iter(captioned.train_dataloader()))
    assert [f"grey {grey(image)}" for image in batch["image"]] == list(batch["caption"])


def test_refusals_and_an_interrupted_conversion_leave_nothing(tmp_path, monkeypatch):
    write_folder(tmp_path / "folder")
    (tmp_path / "folder" / "loose.png").write_bytes((tmp_path / "folder" / "a" / "0.png").read_bytes())
    with pytest.raises(UserError, match="class subfolder"):
        write_shards(tmp_path / "folder", tmp_path / "shards", labels=True)
    with pytest.raises(UserError, match="no image files"):
        write_shards(tmp_path / "nowhere", tmp_path / "shards")
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserError, match="already exists"):
        write_shards(tmp_path / "folder", tmp_path / "taken")
    real = shard_writer.image_record
    calls = []

    def failing(path):
        calls.append(path)
        if len(calls) == 7:
            raise OSError("No space left on device")
        return real(path)

    monkeypatch.setattr(shard_writer, "image_record", failing)
    with pytest.raises(OSError):
        write_shards(tmp_path / "folder", tmp_path / "shards", max_count=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "taken"]  # no shards, no partial folder
    monkeypatch.setattr(shard_writer, "image_record", real)
    write_shards(tmp_path / "folder" / "b", tmp_path / "uncaptioned")
    with pytest.raises(UserError, match="data.captions=false"):  # captions expected, none in the shards
        WebDatasetDataModule(root=str(tmp_path / "uncaptioned"), image_size=8).setup()
