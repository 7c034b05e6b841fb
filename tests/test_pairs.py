"""Pair transforms: their geometry and values, and how the DataModules add them to samples (after the flip,
fixed per item), on the same on-disk fixtures as test_datamodules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_datamodules import scaled, write_cifar, write_idx_set

from lit_diffusion.datamodules import CIFAR10DataModule, MNISTDataModule
from lit_diffusion.datamodules.pairs import JPEG, Blur, Grayscale, LowResolution, Mask, OneOf, Quantize
from lit_diffusion.errors import UserError
from lit_diffusion.metrics.images import dataset_split

PAIRS = "lit_diffusion.datamodules.pairs."
ALL_PAIRS = {
    "low_res": {"_target_": PAIRS + "LowResolution", "factor": 4},
    "gray": {"_target_": PAIRS + "Grayscale"},
    "box": {"_target_": PAIRS + "Mask", "kind": "box"},
}


def cifar(tmp_path, **kwargs) -> CIFAR10DataModule:
    """A CIFAR-10 DataModule (random flips on) over the fixture batches in ``tmp_path``, set up."""
    if not (tmp_path / "cifar-10-batches-py").is_dir():
        write_cifar(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), **{"batch_size": 2, "pairs": ALL_PAIRS, **kwargs})
    dm.setup()
    return dm


def apply(transform, image: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    return transform({"image": image}, torch.Generator().manual_seed(seed))


def holes(mask: torch.Tensor) -> tuple[list[int], list[int]]:
    """The rows and the columns that hold a missing pixel."""
    missing = mask[0] == 0
    return missing.any(1).nonzero().flatten().tolist(), missing.any(0).nonzero().flatten().tolist()


# ----------------------------------------------------------------------------------------------- in the DataModule


def test_pairs_are_computed_from_the_flipped_view(tmp_path):
    dm = cifar(tmp_path)
    views = dm.train_dataloader().dataset
    n = len(dm.train_set)
    assert len(views) == 2 * n and set(views[0]) == {"image", "label", "low_res", "gray", "mask", "masked_image"}
    for item in range(n):
        plain, mirrored = views[item], views[n + item]
        assert torch.equal(mirrored["image"], plain["image"].flip(-1))
        torch.testing.assert_close(mirrored["low_res"], plain["low_res"].flip(-1), rtol=0, atol=1e-6)
        assert not torch.allclose(mirrored["low_res"], plain["low_res"], atol=0.1)  # so it was recomputed
        torch.testing.assert_close(mirrored["gray"], plain["gray"].flip(-1), rtol=0, atol=1e-6)
        assert torch.equal(mirrored["mask"], plain["mask"])  # drawn per item, not per view
        assert torch.equal(mirrored["masked_image"], mirrored["image"] * mirrored["mask"])
        assert all(torch.equal(plain[key], value) for key, value in dm.train_set[item].items() if key != "label")


def test_pairs_depend_only_on_seed_and_item(tmp_path):
    first, second, other_seed = cifar(tmp_path), cifar(tmp_path, batch_size=5), cifar(tmp_path, seed=1)

    def val_batches(dm):
        batches = list(dm.val_dataloader())
        return {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}

    a, b = val_batches(first), val_batches(second)
    assert all(torch.equal(a[key], b[key]) for key in a)

    masks = {}
    for dm in (first, second):  # every epoch, every batch size: an item's view carries the item's mask
        loader = dm.train_dataloader()
        for epoch in (0, 3):
            loader.sampler.set_epoch(epoch)
            seen = torch.cat([batch["mask"] for batch in loader])
            for position, index in enumerate(loader.sampler.order().tolist()):
                item = index % len(dm.train_set)
                assert torch.equal(seen[position], masks.setdefault(item, dm.train_set[item]["mask"]))
    assert len({tuple(mask.flatten().tolist()) for mask in masks.values()}) > len(masks) // 2  # boxes vary
    assert any(not torch.equal(masks[item], other_seed.train_set[item]["mask"]) for item in masks)


def test_pairs_reach_the_metrics_split_through_hydra(tmp_path):
    write_cifar(tmp_path)
    config = {"_target_": "lit_diffusion.datamodules.CIFAR10DataModule", "root": str(tmp_path), "batch_size": 2,
              "pairs": [ALL_PAIRS["gray"]]}  # Hydra builds the transforms; a list works as well as a dict
    sample = dataset_split(config, "val")[0]
    assert sample["gray"].shape == (1, 32, 32)


def test_low_resolution_matches_pil_bicubic_on_cifar(tmp_path):
    written = write_cifar(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), batch_size=2,
                           pairs={"low_res": {"_target_": PAIRS + "LowResolution", "factor": 4, "upsample": False}})
    dm.setup()
    for index, chw in enumerate(written["test_batch"][0]):
        low = dm.val_set[index]["low_res"]
        reference = np.asarray(Image.fromarray(chw.transpose(1, 2, 0)).resize((8, 8), Image.BICUBIC))
        assert low.shape == (3, 8, 8)
        torch.testing.assert_close(low, scaled(reference).permute(2, 0, 1), rtol=0, atol=1 / 127.5)


def test_grayscale_matches_pil_luma_on_cifar(tmp_path):
    written = write_cifar(tmp_path)
    dm = cifar(tmp_path)
    for index, chw in enumerate(written["test_batch"][0]):
        reference = np.asarray(Image.fromarray(chw.transpose(1, 2, 0)).convert("L"))
        torch.testing.assert_close(dm.val_set[index]["gray"][0], scaled(reference), rtol=0, atol=0.5 / 127.5 + 1e-6)


def test_masks_on_mnist(tmp_path):
    data = write_idx_set(tmp_path / "MNIST" / "raw", suffix="")
    dm = MNISTDataModule(root=str(tmp_path), variant="full", batch_size=6,
                         pairs={"center": {"_target_": PAIRS + "Mask"}})
    batch = next(iter(dm.val_dataloader()))
    assert batch["mask"].shape == (6, 1, 28, 28) and batch["masked_image"].shape == (6, 1, 28, 28)
    assert holes(batch["mask"][0]) == (list(range(7, 21)), list(range(7, 21)))
    known = batch["mask"].bool()
    assert torch.equal(batch["masked_image"][known], scaled(data["t10k-images-idx3-ubyte"])[:, None][known])
    assert (batch["masked_image"][~known] == 0).all()


# ----------------------------------------------------------------------------------------------- the transforms


def test_low_resolution_block_means_size_and_range():
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    smooth = 0.5 * torch.sin(2 * torch.pi * (x + 0.5) / 32) * torch.cos(torch.pi * (y + 0.5) / 32)
    noise = torch.rand(32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    image = (smooth + 0.4 * noise).expand(3, 32, 32)
    low = apply(LowResolution(4, upsample=False), image)["low_res"]
    assert low.shape == (3, 8, 8)
    # antialiased: close to the mean of each 4x4 block (plain bicubic sampling of the noise is 0.16 rms off)
    error = low - F.avg_pool2d(image, 4)
    assert error.pow(2).mean().sqrt() < 0.05 and error.abs().max() < 0.1

    up = apply(LowResolution(4, key="up"), image)["up"]
    assert up.shape == (3, 32, 32) and (F.avg_pool2d(up, 4) - low).abs().max() < 0.05  # back to full size

    stripes = (torch.arange(32) // 8 % 2 * 2 - 1.0).expand(1, 32, 32)  # +-1, 8 wide: bicubic overshoots them
    assert F.interpolate(stripes[None], size=(8, 8), mode="bicubic", antialias=True).abs().max() > 1.02
    assert apply(LowResolution(4, upsample=False), stripes)["low_res"].abs().max() == 1
    assert apply(LowResolution(4), stripes)["low_res"].abs().max() <= 1


def test_mask_center_and_half_geometry_and_masked_image():
    image = torch.rand(3, 10, 12) * 2 - 1
    center = apply(Mask(size=0.5), image)
    assert center["mask"].shape == (1, 10, 12) and center["mask"].dtype == image.dtype
    assert holes(center["mask"]) == ([2, 3, 4, 5, 6], [3, 4, 5, 6, 7, 8])  # 5 of 10 rows, 6 of 12 columns
    assert int((center["mask"] == 0).sum()) == 30  # exactly the rectangle, exactly 0 or 1
    assert torch.equal(center["masked_image"], torch.where(center["mask"].bool(), image, 0))

    expected = {"left": ([*range(10)], [*range(6)]), "right": ([*range(10)], [*range(6, 12)]),
                "top": ([*range(5)], [*range(12)]), "bottom": ([*range(5, 10)], [*range(12)])}
    for side, hole in expected.items():
        mask = apply(Mask("half", key="m", masked_key="x", side=side), image)["m"]
        assert holes(mask) == hole and int((mask == 0).sum()) == 60
    drawn = [holes(apply(Mask("half"), image, seed)["mask"]) for seed in range(40)]
    assert all(hole in expected.values() for hole in drawn) and len(set(map(str, drawn))) == 4


def test_mask_box_is_a_rectangle_within_its_size_range():
    image = torch.zeros(1, 40, 20)
    shapes = set()
    for seed in range(50):
        mask = apply(Mask("box", min_size=0.25, max_size=0.5), image, seed)["mask"]
        rows, columns = holes(mask)
        assert rows == [*range(rows[0], rows[-1] + 1)] and columns == [*range(columns[0], columns[-1] + 1)]
        assert 10 <= len(rows) <= 20 and 5 <= len(columns) <= 10
        assert int((mask == 0).sum()) == len(rows) * len(columns)
        shapes.add((rows[0], columns[0], len(rows), len(columns)))
    assert len(shapes) > 40


def test_grayscale_weights_on_known_colours():
    pixels = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, 1]])  # red, green, blue, white
    gray = apply(Grayscale(), pixels.T.reshape(3, 2, 2))["gray"]
    expected = torch.tensor([[[0.299 - 0.587 - 0.114, -0.299 + 0.587 - 0.114], [-0.299 - 0.587 + 0.114, 1.0]]])
    torch.testing.assert_close(gray, expected, rtol=0, atol=1e-6)
    rgb = apply(Grayscale(channels=3), pixels.T.reshape(3, 2, 2))["gray"]  # colorization's source in a generalist
    assert rgb.shape == (3, 2, 2) and all(torch.equal(channel, gray[0]) for channel in rgb)
    chosen = OneOf({"colorize": {"_target_": PAIRS + "Grayscale", "channels": 3}})
    out = chosen({"image": pixels.T.reshape(3, 2, 2)}, torch.Generator().manual_seed(0))
    assert torch.equal(out["source"], rgb) and torch.equal(out["mask"], torch.ones(1, 2, 2))
    with pytest.raises(UserError, match="channels must be 1"):
        Grayscale(channels=2)


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ({"m": {"_target_": PAIRS + "Mask", "kind": "circle"}}, r"data\.pairs\.m: Mask kind must be one of center"),
        ({"lr": {"_target_": PAIRS + "LowResolution", "factor": 3}},
         r"data\.pairs\.lr: LowResolution factor=3 does not divide the image size 32x32: .*data\.image_size"),
        ({"lr": {"_target_": PAIRS + "LowResolution", "factr": 4}}, r"data\.pairs\.lr: .*factr"),
        ({"g": {"_target_": PAIRS + "Grayscale", "key": "image"}}, r"data\.pairs\.g writes the sample key 'image'"),
        ({"a": {"_target_": PAIRS + "Grayscale", "key": "label"}}, r"key 'label', which the dataset writes"),
        ({"a": {"_target_": PAIRS + "Grayscale"}, "b": {"_target_": PAIRS + "Mask", "key": "gray"}},
         r"data\.pairs\.b writes the sample key 'gray', which data\.pairs\.a writes too"),
        ({"m": {"_target_": PAIRS + "Mask", "key": "same", "masked_key": "same"}}, r"'same'"),
        ({"x": {"_target_": "os.system", "command": "false"}}, r"data\.pairs\.x: not a pair transform"),
        ({"x": {"_target_": "torch.nn.Identity"}}, r"data\.pairs\.x: .*set its _target_ to lit_diffusion"),
        ({"x": {"_target_": PAIRS + "Nope"}}, r"data\.pairs\.x: not a pair transform"),
        ([{"factor": 4}], r"data\.pairs\[0\]: not a pair transform \(its _target_ is None\)"),
    ],
)
def test_bad_pairs_are_user_errors(pairs, message):
    with pytest.raises(UserError, match=message):
        CIFAR10DataModule(pairs=pairs)


def test_grayscale_needs_rgb():
    with pytest.raises(UserError, match="data.channels=3"):
        MNISTDataModule(pairs={"g": {"_target_": PAIRS + "Grayscale"}})


# ------------------------------------------------------------------------- RePaint's masks, JPEG, blur, quantise


def test_low_resolution_down_up_consistency_for_every_factor():
    image = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    blocks = F.interpolate(F.avg_pool2d(image[None], 8), scale_factor=8, mode="nearest")[0]  # constant 8x8 blocks
    for factor in (2, 4, 8):
        low = apply(LowResolution(factor, upsample=False), image)["low_res"]
        assert low.shape == (2, 32 // factor, 32 // factor)
        exact = apply(LowResolution(factor, mode="area", upsample=False), image)["low_res"]
        torch.testing.assert_close(exact, F.avg_pool2d(image[None], factor)[0])  # area: exactly the block means
        # down then up then down again changes little; an image constant on the blocks keeps its low-res values
        again = apply(LowResolution(factor, upsample=False), apply(LowResolution(factor), image)["low_res"])["low_res"]
        assert (again - low).pow(2).mean().sqrt() < 0.1
        coarse = apply(LowResolution(factor, mode="area", upsample=False), blocks)["low_res"]
        torch.testing.assert_close(coarse, F.avg_pool2d(blocks[None], factor)[0])


@pytest.mark.parametrize("kind", ["wide", "narrow"])
def test_free_form_masks_are_strokes_within_the_area_limit(kind):
    image = torch.zeros(1, 28, 28)
    fractions, masks = [], []
    for seed in range(40):
        mask = apply(Mask(kind), image, seed)["mask"]
        assert mask.shape == (1, 28, 28) and set(mask.unique().tolist()) <= {0.0, 1.0}
        fractions.append(1 - mask.mean().item())
        masks.append(mask)
    assert all(0 < f <= 0.5 for f in fractions)  # LaMa's max_tamper_area
    assert 0.15 < sum(fractions) / len(fractions) < 0.45, sum(fractions) / len(fractions)
    assert torch.equal(apply(Mask(kind), image, 7)["mask"], masks[7])  # fixed by the generator's seed
    assert len({m.numpy().tobytes() for m in masks}) == len(masks)
    # narrow strokes are thin: most missing pixels have a known 4-neighbour; wide ones are mostly interior
    missing = torch.stack(masks)[:, 0] == 0
    padded = F.pad(missing.float(), (1, 1, 1, 1), value=1).bool()
    interior = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:] & missing
    share = interior.sum().item() / missing.sum().item()
    assert (share < 0.5) if kind == "narrow" else (share > 0.6), share


def test_lines_and_expand_masks():
    image = torch.rand(3, 28, 28) * 2 - 1
    lines = apply(Mask("lines"), image)
    assert torch.equal(lines["mask"][0, 0::2], torch.ones(14, 28)) and torch.equal(lines["mask"][0, 1::2], torch.zeros(14, 28))
    assert torch.equal(lines["masked_image"], image * lines["mask"])
    expand = apply(Mask("expand", size=0.5), image)["mask"]
    known_rows, known_columns = (expand[0] == 1).any(1).nonzero().flatten().tolist(), (expand[0] == 1).any(0).nonzero().flatten().tolist()
    assert known_rows == known_columns == [*range(7, 21)] and int(expand.sum()) == 14 * 14  # 75 % missing
    with pytest.raises(UserError, match="max_area"):
        Mask("wide", max_area=0)


def test_jpeg_round_trip():
    y, x = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    image = (torch.sin(x / 3) * torch.cos(y / 5) * 0.8 + 0.1 * torch.sin(x * y)).expand(1, 28, 28)
    sizes, errors = [], []
    for quality in (5, 10, 20, 90):
        out = apply(JPEG(quality), image)["jpeg"]
        assert out.shape == image.shape and out.dtype == image.dtype and out.abs().max() <= 1
        assert torch.equal(apply(JPEG(quality), image, seed=3)["jpeg"], out)  # no randomness
        sizes.append(len(JPEG(quality).encode(image)))
        errors.append((out - image).pow(2).mean().item())
    assert sizes == sorted(sizes) and errors == sorted(errors, reverse=True), (sizes, errors)
    rgb = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert apply(JPEG(10, key="j"), rgb)["j"].shape == (3, 16, 16)
    with Image.open(__import__("io").BytesIO(JPEG(20).encode(rgb))) as decoded:
        assert decoded.format == "JPEG" and decoded.size == (16, 16) and decoded.mode == "RGB"
    for bad in (0, 96, 2.5):
        with pytest.raises(UserError, match="quality"):
            JPEG(bad)


def test_blur_and_quantize():
    image = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    blurred = apply(Blur(1.5), image)["blurred"]
    assert blurred.shape == image.shape and blurred.std() < 0.5 * image.std()
    assert abs(blurred.mean() - image.mean()) < 0.02
    constant = torch.full((1, 8, 8), 0.25)
    torch.testing.assert_close(apply(Blur(2.0), constant)["blurred"], constant)
    for levels in (2, 3, 8):
        quantized = apply(Quantize(levels, key="q"), image)["q"]
        values = torch.linspace(-1, 1, levels)
        assert (quantized[..., None] - values).abs().min(-1).values.max() < 1e-6  # on the levels
        assert len(quantized.unique()) == levels
        assert (quantized - image).abs().max() <= 1 / (levels - 1) + 1e-6  # half a level (levels span 2)
    with pytest.raises(UserError, match="levels"):
        Quantize(1)
    with pytest.raises(UserError, match="sigma"):
        Blur(0)
