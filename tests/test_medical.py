"""Medical slice DataModules on small files written here in the real formats: PNG slice folders and BraTS-layout
NIfTI volumes (nibabel); a tiny segdiff_brats run scored by ``lit_diffusion.segment``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
import nibabel
import numpy as np
import pytest
import torch
from cli import train_in_process
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from PIL import Image
from test_datamodules import own_defaults

import lit_diffusion
from lit_diffusion.datamodules.base import ImageDataModule
from lit_diffusion.datamodules.medical import BRATS_LABELS, MedicalSliceDataModule
from lit_diffusion.datamodules.medical_nifti import MODALITIES, BraTSNiftiDataModule
from lit_diffusion.datamodules.medical_slices import SliceFolderDataModule
from lit_diffusion.errors import UserError
from lit_diffusion.segment import segment

CONFIG_DIR = Path(lit_diffusion.__file__).parent / "configs" / "data"
SHAPE = (16, 16, 10)
"""x, y and the 10 axial slices of the fixture volumes; slices 0 and 9 are empty (no brain)."""
CUBE = (slice(5, 9), slice(6, 10))
"""The tumour's pixels in case 0's slices 4 (label 1), 5 (label 2) and 6 (label 4)."""
TUMOUR_SLICES = {4: 1, 5: 2, 6: 4}


def volumes(case: int, rng) -> dict[str, np.ndarray]:
    """Four modalities and the seg of one case: brain on slices 1-8 with intensities 100-200 plus a bright spot of
    modality m at pixel (1, 2 + m) of a row of 100s; case 0 has the tumour cube, bright in flair."""
    brain = np.zeros(SHAPE, dtype=bool)
    brain[1:15, 1:15, 1:9] = True
    out = {}
    for m, name in enumerate(MODALITIES):
        volume = np.where(brain, rng.uniform(100, 200, SHAPE), 0).astype(np.float32)
        volume[1, 1:15, 1:9] = 100
        volume[1, 2 + m, 1:9] = 5000
        out[name] = volume
    seg = np.zeros(SHAPE, dtype=np.uint8)
    if case == 0:
        for k, value in TUMOUR_SLICES.items():
            seg[(*CUBE, k)] = value
            out["flair"][(*CUBE, k)] = 1000
    out["seg"] = seg
    return out


def write_brats(root: Path, cases: int = 3, ext: str = ".nii.gz") -> Path:
    rng = np.random.default_rng(0)
    for case in range(cases):
        name = f"BraTS2021_{case:05d}"
        (root / name).mkdir(parents=True)
        for suffix, volume in volumes(case, rng).items():
            nibabel.Nifti1Image(volume, np.eye(4)).to_filename(root / name / f"{name}_{suffix}{ext}")
    return root


def write_slices(root: Path, cases=("P7", "P10", "P2"), numbers=(2, 10, 3), size: int = 12,
                 tumour: str = "P10") -> Path:
    """PNG slices <case>_<n>.png (grey value 20 n + case index) and masks; slice 3 of case ``tumour`` has labels
    1, 2 and 4 in 2 x 2 blocks."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for c, case in enumerate(cases):
        for n in numbers:
            Image.fromarray(np.full((size, size), 20 * n + c, dtype=np.uint8)).save(root / "images" / f"{case}_{n}.png")
            mask = np.zeros((size, size), dtype=np.uint8)
            if case == tumour and n == 3:
                mask[2:4, 2:4], mask[4:6, 4:6], mask[6:8, 6:8] = 1, 2, 4
            Image.fromarray(mask).save(root / "masks" / f"{case}_{n}.png")
    return root


# ------------------------------------------------------------------------------------------------- PNG slices


def test_slice_folder_orders_by_case_and_slice_number_and_maps_labels(tmp_path):
    root = write_slices(tmp_path / "slices")
    data = SliceFolderDataModule(root=str(root), image_size=12, batch_size=1, val_fraction=0)
    assert data.cases() == ["P10", "P2", "P7"] and data.num_classes == 4 and data.image_shape == (1, 12, 12)
    dataset = data.slices(["P10"])
    samples = [dataset[i] for i in range(3)]
    assert [round((s["image"][0, 0, 0].item() + 1) * 127.5) for s in samples] == [40 + 1, 60 + 1, 200 + 1]  # 2, 3, 10
    assert [s["label"] for s in samples] == [0, 1, 0]
    seg = samples[1]["segmentation"]
    assert seg.dtype == torch.long and seg[2, 2] == 1 and seg[4, 4] == 2 and seg[6, 6] == 3 and seg.sum() == 4 * 6
    assert torch.equal(samples[1]["anomaly_mask"][0], seg > 0)
    binary = SliceFolderDataModule(root=str(root), image_size=12, batch_size=1, whole_tumour=True).slices(["P10"])
    assert binary[1]["segmentation"].unique().tolist() == [0, 1] and binary.label_map.classes == 2


def test_slice_folder_splits_by_patient_and_keeps_healthy_training_slices(tmp_path):
    root = write_slices(tmp_path / "slices", cases=tuple(f"P{i}" for i in range(10)), tumour="P3")
    data = SliceFolderDataModule(root=str(root), image_size=12, batch_size=2, val_fraction=0.3, classes=[0])
    data.setup()
    train, val = data.train_set.dataset, data.val_set.dataset
    train_cases = set(train.dataset.cases[train.indices])
    assert len(set(val.cases)) == 3 and len(train_cases) == 7 and not train_cases & set(val.cases)
    assert all(data.train_set[i]["label"] == 0 and not data.train_set[i]["anomaly_mask"].any()
               for i in range(len(data.train_set)))
    assert len(data.train_set) == 3 * 7 - ("P3" in train_cases)  # P3's tumour slice left out of training
    assert sum(data.val_set[i]["label"] for i in range(len(data.val_set))) == ("P3" not in train_cases)
    again = SliceFolderDataModule(root=str(root), image_size=12, batch_size=2, val_fraction=0.3, seed=1)
    again.setup()
    assert set(again.val_set.dataset.cases) != set(val.cases)  # another seed, other patients


def test_slice_folder_bad_input_is_one_user_error(tmp_path):
    root = write_slices(tmp_path / "slices")
    with pytest.raises(UserError, match="synapse.*set data.root"):
        SliceFolderDataModule(root=str(tmp_path / "nowhere"), batch_size=1).setup()
    with pytest.raises(UserError, match=r"label values \[4\] outside"):
        SliceFolderDataModule(root=str(root), batch_size=1, label_values=[0, 1, 2]).setup()
    with pytest.raises(UserError, match="random_flip"):
        SliceFolderDataModule(root=str(root), random_flip=True)
    (root / "masks" / "P2_3.png").rename(root / "P2_3.png")
    with pytest.raises(UserError, match="has no mask"):
        SliceFolderDataModule(root=str(root), batch_size=1).setup()
    (root / "P2_3.png").rename(root / "masks" / "P2_3.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "images" / "nonumber.png")
    with pytest.raises(UserError, match="<case>_<slice number>"):
        SliceFolderDataModule(root=str(root), batch_size=1).setup()


def test_slice_folder_without_masks_gives_images_only(tmp_path):
    root = write_slices(tmp_path / "slices")
    for path in (root / "masks").iterdir():
        path.unlink()
    (root / "masks").rmdir()
    data = SliceFolderDataModule(root=str(root), image_size=6, batch_size=1, val_fraction=0)
    data.setup()
    assert set(data.train_set[0]) == {"image"} and data.train_set[0]["image"].shape == (1, 6, 6)
    with pytest.raises(UserError, match="no labels"):
        SliceFolderDataModule(root=str(root), batch_size=1, classes=[0]).setup()


# ------------------------------------------------------------------------------------------------- NIfTI


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    return write_brats(tmp_path_factory.mktemp("brats"))


def test_nifti_slices_skip_empty_brain_flag_tumour_and_normalise(brats):
    data = BraTSNiftiDataModule(root=str(brats), image_size=16, batch_size=1)
    assert data.cases() == [f"BraTS2021_{i:05d}" for i in range(3)] and data.image_shape == (4, 16, 16)
    dataset = data.slices(["BraTS2021_00000"])
    assert dataset.rows[:, 1].tolist() == list(range(1, 9))  # slices 0 and 9 hold no brain
    assert dataset.labels["label"].tolist() == [int(k in TUMOUR_SLICES) for k in range(1, 9)]
    for position, k in enumerate(range(1, 9)):
        sample = dataset[position]
        image, seg = sample["image"], sample["segmentation"]
        assert image.shape == (4, 16, 16) and image.min() == -1 and image.max() == 1
        assert (image[:, 0] == -1).all()  # background
        for m in range(4):  # channel m is modality m: its bright spot
            assert image[m, 1, 2 + m] == 1 and (image[m, 1, 2:6] == 1).sum() == 1
        expected = torch.zeros(16, 16, dtype=torch.long)
        if k in TUMOUR_SLICES:
            expected[CUBE] = BRATS_LABELS.index(TUMOUR_SLICES[k])
            assert (image[3][CUBE] == 1).all()  # bright in flair exactly where the mask is
        assert torch.equal(seg, expected) and torch.equal(sample["anomaly_mask"][0], expected > 0)
    kept = BraTSNiftiDataModule(root=str(brats), batch_size=1, slice_range=[3, 6], min_brain_fraction=None)
    assert kept.slices(["BraTS2021_00001"]).rows[:, 1].tolist() == [3, 4, 5]
    assert len(BraTSNiftiDataModule(root=str(brats), batch_size=1, min_brain_fraction=None)
               .slices(["BraTS2021_00001"])) == 10


def test_nifti_modalities_are_the_channels_and_resizing_keeps_masks_aligned(brats):
    data = BraTSNiftiDataModule(root=str(brats), modalities=["flair", "t1"], channels=2, image_size=8,
                                whole_tumour=True, batch_size=1)
    sample = data.slices(["BraTS2021_00000"])[4]  # slice 5
    assert sample["image"].shape == (2, 8, 8) and sample["segmentation"].unique().tolist() == [0, 1]
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:4, 3:5] = True  # nearest-exact halving reads source pixels 2i + 1: rows 5, 7 and columns 7, 9
    assert torch.equal(sample["anomaly_mask"][0], expected)
    flair, brain = sample["image"][0], sample["image"][0] > -1
    assert flair[expected].mean() > flair[~expected & brain].mean() + 1  # the tumour is where the mask is


def test_nifti_split_by_patient_healthy_filter_and_segmentation_target(brats):
    data = BraTSNiftiDataModule(root=str(brats), image_size=16, batch_size=2, val_fraction=1 / 3, classes=[0])
    data.setup()
    train, val = data.train_set.dataset, data.val_set.dataset
    assert len(set(val.cases)) == 1 and len(set(train.dataset.cases[train.indices])) == 2
    assert not set(train.dataset.cases[train.indices]) & set(val.cases)
    assert all(data.train_set[i]["label"] == 0 for i in range(len(data.train_set)))
    assert len(data.train_set) + len(data.val_set) == 3 * 8 - 3 * (val.cases[0] != "BraTS2021_00000")
    target = BraTSNiftiDataModule(root=str(brats), image_size=16, batch_size=1, target="segmentation")
    sample = target.slices(["BraTS2021_00000"])[4]
    assert target.image_shape == (4, 16, 16) and sample["scan"].shape == (4, 16, 16)
    assert torch.equal(sample["image"].argmax(0), sample["segmentation"])
    assert set(sample["image"].unique().tolist()) == {-1, 1}


def test_nifti_labelled_keeps_the_first_training_slices_repeated_to_a_batch(brats):
    options = {"root": str(brats), "image_size": 16, "batch_size": 5, "val_fraction": 1 / 3}
    full, few = BraTSNiftiDataModule(**options), BraTSNiftiDataModule(**options, labelled=3)
    full.setup()
    few.setup()
    assert full.labelled_images == len(full.train_set) == 16 and few.labelled_images == 3
    assert len(few.train_set) == 6 and len(few.val_set) == len(full.val_set) == 8  # 3 slices twice: a batch of 5
    for i in range(6):
        assert torch.equal(few.train_set[i]["image"], full.train_set[i % 3]["image"])
    with pytest.raises(UserError, match="data.labelled=17.*16 slices"):
        BraTSNiftiDataModule(**options, labelled=17).setup()
    with pytest.raises(UserError, match="data.labelled must be a positive"):
        BraTSNiftiDataModule(**options, labelled=0)


def test_nifti_reads_uncompressed_files_too(tmp_path):
    root = write_brats(tmp_path / "brats", cases=1, ext=".nii")
    assert len(BraTSNiftiDataModule(root=str(root), batch_size=1).slices(["BraTS2021_00000"])) == 8


def test_nifti_bad_input_and_missing_data_are_one_user_error(brats, tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"(?s)synapse.*<case>/<case>_\{t1,t1ce,t2,flair,seg\}\.nii\.gz"):
        BraTSNiftiDataModule(root=str(tmp_path / "nowhere"), batch_size=1).setup()
    with pytest.raises(UserError, match="channels"):
        BraTSNiftiDataModule(root=str(brats), modalities=["t1", "t2"], channels=4)
    with pytest.raises(UserError, match="no t1gd volume"):
        BraTSNiftiDataModule(root=str(brats), modalities=["t1gd"], channels=1, batch_size=1).setup()
    with pytest.raises(UserError, match="percentiles"):
        BraTSNiftiDataModule(root=str(brats), percentiles=[99, 1])
    monkeypatch.setitem(sys.modules, "nibabel", None)  # as if it were not installed
    with pytest.raises(UserError, match="pip install nibabel"):
        BraTSNiftiDataModule(root=str(brats), batch_size=1).setup()


# ------------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ["brats_slices", "brats_nifti"])
def test_config_lists_every_constructor_argument_with_its_default(name):
    config = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    cls = hydra.utils.get_class(config._target_)
    defaults = {**own_defaults(ImageDataModule), **own_defaults(MedicalSliceDataModule), **own_defaults(cls)}
    assert set(config) - {"_target_"} == set(defaults)
    for key in set(config) - {"_target_"}:
        if not OmegaConf.is_interpolation(config, key):
            value = OmegaConf.to_object(config[key]) if OmegaConf.is_config(config[key]) else config[key]
            assert value == (list(defaults[key]) if isinstance(defaults[key], tuple) else defaults[key]), key


def test_experiment_datamodule_from_hydra_yields_batches(brats):
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=anoddpm_brats", "paths.output_dir=/tmp/unused",
                                           f"data.root={brats}", "data.image_size=16", "data.batch_size=4",
                                           "data.num_workers=0", "data.pin_memory=false", "data.slice_range=null",
                                           "data.val_fraction=0.34"])
    data = hydra.utils.instantiate(cfg.data)
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (4, 1, 16, 16) and (batch["label"] == 0).all()
    val = next(iter(data.val_dataloader()))
    assert set(val) == {"image", "segmentation", "anomaly_mask", "label"} and val["anomaly_mask"].dtype == torch.bool


# ------------------------------------------------------------------------------------------------- segmentation


@pytest.mark.usefixtures("one_thread")
def test_segment_scores_a_tiny_segdiff_brats_and_a_unet_on_the_four_classes(brats, tmp_path):
    data = [f"data.root={brats}", "data.image_size=32", "data.batch_size=4", "data.val_fraction=0.34"]
    ckpt = train_in_process(tmp_path / "segdiff", "experiment=segdiff_brats", *data, "data.labelled=4",
                            "data.num_workers=0", "data.pin_memory=false", "network.base_channels=8",
                            "network.channel_mult=[1,2]", "network.num_res_blocks=1", "network.attention_resolutions=[]",
                            "network.num_groups=8", "trainer.max_steps=2", "trainer.val_check_interval=2",
                            "+trainer.limit_val_batches=1")
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        diffusion = segment(compose("segment", overrides=["method=diffusion", f"ckpt={ckpt}", "samples=2",
                                                          "sampler.steps=2", "n=5", f"out={tmp_path / 'd'}"]))
        unet = segment(compose("segment", overrides=["method=unet", "data=brats_nifti", *data, "labelled=3",
                                                     "unet.steps=3", "n=5", f"out={tmp_path / 'u'}"]))
    assert diffusion["labelled_images"] == 4 and diffusion["nfe"] == 2 * 2 and diffusion["n_val"] == 5
    assert unet["labelled_images"] == 3 and unet["nfe"] == 1 and unet["parameters"] > 0
    for name, result in (("d", diffusion), ("u", unet)):
        metrics = result["metrics"]
        assert len(metrics["iou_per_class"]) == len(metrics["dice_per_class"]) == 4 and 0 <= metrics["miou"] <= 1
        assert json.loads((tmp_path / name / "metrics.json").read_text())["metrics"] == metrics
        for grid in ("input", "prediction", "target"):
            assert (tmp_path / name / f"{grid}.png").is_file()
        shown = np.asarray(Image.open(tmp_path / name / "input.png").convert("RGB"))
        assert (shown == shown[..., :1]).all()  # the first modality, in grey
    assert (tmp_path / "d" / "uncertainty.png").is_file()
    slices = write_slices(tmp_path / "slices", cases=("P1", "P2", "P3"))
    for mask in (slices / "masks").iterdir():
        mask.unlink()
    (slices / "masks").rmdir()
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"), \
            pytest.raises(UserError, match="no 'segmentation' label maps.*masks/"):
        segment(compose("segment", overrides=["method=unet", "data=brats_slices", f"data.root={slices}",
                                              "data.val_fraction=0.34", "data.batch_size=2", "labelled=2"]))
