"""CelebA-HQ in taming's on-disk layout: imgHQ*.npy arrays of shape (1, 3, H, W) and the split lists."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lit_diffusion.datamodules.celebahq import CelebAHQDataModule
from lit_diffusion.errors import UserError


def taming_layout(tmp_path, n=6, val=2, png=False):
    root = tmp_path / "data" / "celebahq"
    root.mkdir(parents=True)
    arrays = np.random.default_rng(0).integers(0, 256, (n, 1, 3, 8, 8), dtype=np.uint8)
    names = []
    for i, array in enumerate(arrays):
        name = f"imgHQ{i:05d}"
        if png:
            Image.fromarray(array[0].transpose(1, 2, 0)).save(root / f"{name}.png")
        else:
            np.save(root / f"{name}.npy", array)
        names.append(f"{name}.npy")  # taming's lists name the .npy files
    (tmp_path / "data" / "celebahqtrain.txt").write_text("\n".join(names[val:]) + "\n")
    (tmp_path / "data" / "celebahqvalidation.txt").write_text("\n".join(names[:val]) + "\n")
    return root, arrays


@pytest.mark.parametrize("png", [False, True])
def test_taming_lists_split_and_npy_or_png_pixels(tmp_path, png):
    root, arrays = taming_layout(tmp_path, png=png)
    data = CelebAHQDataModule(root=str(root), train_list=str(tmp_path / "data" / "celebahqtrain.txt"),
                              val_list=str(tmp_path / "data" / "celebahqvalidation.txt"), image_size=8, batch_size=2,
                              random_flip=False)
    data.setup("fit")
    assert len(data.train_set) == 4 and len(data.val_set) == 2
    for dataset, first in ((data.val_set, 0), (data.train_set, 2)):
        pixels = np.round((dataset[0]["image"].numpy() + 1) * 127.5).astype(np.uint8)
        np.testing.assert_array_equal(pixels, arrays[first, 0])
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (2, 3, 8, 8)


def test_without_lists_val_fraction_is_held_out(tmp_path):
    root, _ = taming_layout(tmp_path)
    data = CelebAHQDataModule(root=str(root), image_size=8, batch_size=2, val_fraction=0.5)
    data.setup("fit")
    assert len(data.train_set) == len(data.val_set) == 3


def test_layout_problems_are_user_errors(tmp_path):
    root, _ = taming_layout(tmp_path)
    lists = {"train_list": str(tmp_path / "data" / "celebahqtrain.txt"),
             "val_list": str(tmp_path / "data" / "celebahqvalidation.txt")}
    with pytest.raises(UserError, match="both"):
        CelebAHQDataModule(root=str(root), train_list=lists["train_list"])
    (root / "imgHQ00003.npy").unlink()
    with pytest.raises(UserError, match="1 of 4 listed images are not under"):
        CelebAHQDataModule(root=str(root), image_size=8, **lists).setup("fit")
    with pytest.raises(UserError, match="CelebA-HQ .*not found"):
        CelebAHQDataModule(root=str(tmp_path / "nothing"), image_size=8).setup("fit")
