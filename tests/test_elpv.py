"""The ELPV DataModule on a small copy written in the ``elpv-dataset`` package's on-disk layout, and on the
package's real 2,624 cells."""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from lit_diffusion.datamodules import ELPVDataModule
from lit_diffusion.datamodules.elpv import package_data_dir, read_labels
from lit_diffusion.errors import UserError
from test_datamodules import CONFIG_DIR, constructor_defaults, own_defaults, ImageDataModule

# (probability, type) of the fixture's cells, as labels.csv writes them
CELLS = [(1.0, "mono"), (0.0, "mono"), (0.3333333333333333, "poly"), (0.0, "poly"), (0.6666666666666666, "mono"),
         (0.0, "poly"), (0.0, "mono"), (1.0, "poly"), (0.0, "poly"), (0.3333333333333333, "mono")]


def write_elpv(root: Path) -> list[np.ndarray]:
    """``root/labels.csv`` and ``root/images/cellNNNN.png`` (300 × 300, mode L) as in elpv_dataset/data: cell i is
    constant at grey level 20 i with a white top-left pixel."""
    (root / "images").mkdir(parents=True)
    lines, images = [], []
    for i, (probability, kind) in enumerate(CELLS, 1):
        array = np.full((300, 300), 20 * i, dtype=np.uint8)
        array[0, 0] = 255
        Image.fromarray(array, mode="L").save(root / "images" / f"cell{i:04d}.png")
        lines.append(f"images/cell{i:04d}.png  {probability!r:<20}{kind}")
        images.append(array)
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return images


def samples(dataset) -> list[dict]:
    return [dataset[i] for i in range(len(dataset))]


def test_reads_the_package_layout_with_probabilities_types_and_labels(tmp_path):
    write_elpv(tmp_path)
    paths, probabilities, types = read_labels(tmp_path / "labels.csv")
    assert [Path(p).name for p in paths] == [f"cell{i:04d}.png" for i in range(1, 11)]
    assert probabilities.tolist() == pytest.approx([p for p, _ in CELLS])
    assert types.tolist() == [0 if kind == "mono" else 1 for _, kind in CELLS]

    dm = ELPVDataModule(root=str(tmp_path), image_size=32, val_fraction=0.0, batch_size=10, random_flip=False)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))  # shuffled: each sample's cell is read from its grey level
    assert batch["image"].shape == (10, 1, 32, 32) and batch["proba"].dtype == torch.float32
    cell = ((batch["image"][:, 0, -1, -1] + 1) * 127.5).round().long() // 20 - 1
    assert sorted(cell.tolist()) == list(range(10))
    assert batch["proba"].tolist() == pytest.approx([CELLS[c][0] for c in cell])
    assert batch["label"].tolist() == [round(3 * CELLS[c][0]) for c in cell]
    assert batch["cell_type"].tolist() == [("mono", "poly").index(CELLS[c][1]) for c in cell]
    assert dm.num_classes == 4


def test_split_is_seeded_and_classes_filter_only_training(tmp_path):
    write_elpv(tmp_path)

    def splits(**kwargs):
        dm = ELPVDataModule(root=str(tmp_path), image_size=16, val_fraction=0.3, batch_size=2, **kwargs)
        dm.setup()
        return ([s["proba"].item() for s in samples(dm.train_set)],
                [s["image"][0, -1, -1].item() for s in samples(dm.val_set)])

    train, val = splits(seed=0)
    assert len(train) == 7 and len(val) == 3 and splits(seed=0) == (train, val) and splits(seed=1)[1] != val
    functional, val_again = splits(seed=0, classes=[0])
    assert val_again == val and all(p == 0 for p in functional)
    assert len(functional) == sum(p == 0 for p in train) and len(functional) < len(train)
    mono_train, mono_val = splits(seed=0, cell_type="mono")
    assert len(mono_train) + len(mono_val) == sum(kind == "mono" for _, kind in CELLS)


def test_pixels_are_the_png_values_resized(tmp_path):
    images = write_elpv(tmp_path)
    dm = ELPVDataModule(root=str(tmp_path), image_size=300, val_fraction=0.0, batch_size=2, random_flip=False)
    dm.setup()
    first = [s for s in samples(dm.train_set) if s["proba"] == 1.0 and s["cell_type"] == 0][0]["image"][0]
    expected = torch.from_numpy(images[0]).float() / 127.5 - 1
    torch.testing.assert_close(first, expected)


def test_missing_data_and_bad_options_are_one_message(tmp_path):
    with pytest.raises(UserError, match="pip install elpv-dataset"):
        ELPVDataModule(root=str(tmp_path)).setup()
    with pytest.raises(UserError, match="cell_type"):
        ELPVDataModule(cell_type="thin-film")
    (tmp_path / "labels.csv").write_text("images/cell0001.png 0.5\n")
    with pytest.raises(UserError, match="labels.csv:1"):
        ELPVDataModule(root=str(tmp_path)).setup()


def test_config_lists_every_argument_and_subclass_restates_no_default(tmp_path):
    config = OmegaConf.load(CONFIG_DIR / "elpv.yaml")
    defaults = constructor_defaults(ELPVDataModule)
    assert set(config) - {"_target_"} == set(defaults)
    for key in set(config) - {"_target_"}:
        if not OmegaConf.is_interpolation(config, key):
            assert config[key] == defaults[key], key
    base = own_defaults(ImageDataModule)
    assert not {n for n, d in own_defaults(ELPVDataModule).items() if n in base and base[n] == d}
    dm = hydra.utils.instantiate(OmegaConf.create({"seed": 3, "data": config}).data)
    assert isinstance(dm, ELPVDataModule) and dm.seed == 3


@pytest.mark.skipif(package_data_dir() is None, reason="pip install elpv-dataset")
def test_the_real_package_data():
    paths, probabilities, types = read_labels(package_data_dir() / "labels.csv")
    assert len(paths) == 2624 and (probabilities == 0).sum() == 1508 and (types == 1).sum() == 1550
    with Image.open(paths[0]) as image:
        assert image.mode == "L" and image.size == (300, 300)
    dm = ELPVDataModule(image_size=128, classes=[0], batch_size=4)
    dm.setup()
    val_functional = (dm.val_set.dataset.dataset.labels["proba"][dm.val_set.dataset.indices] == 0).sum()
    assert len(dm.val_set) == 262 and len(dm.train_set) == 1508 - val_functional
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 128, 128) and (batch["proba"] == 0).all()
    assert -1 <= batch["image"].min() < batch["image"].max() <= 1 and batch["image"].std() > 0.05
