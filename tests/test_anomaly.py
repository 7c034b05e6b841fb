"""Anomaly detection (AnoDDPM): simplex noise statistics and spectrum, partial-diffusion reconstruction against
the closed form on Gaussian data, synthetic anomalies with exact masks, the metrics, and the entry points."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import TINY, run_cli, train_in_process
from hydra import compose, initialize_config_module
from PIL import Image
from test_tasks import DATA

from lit_diffusion.anomaly import anomaly_detection
from lit_diffusion.datamodules import MNISTDataModule
from lit_diffusion.datamodules.anomalies import SyntheticAnomaly
from lit_diffusion.datamodules.base import item_labels
from lit_diffusion.datamodules.mvtec import MVTecADDataModule
from lit_diffusion.errors import UserError
from lit_diffusion.evaluate import evaluate
from lit_diffusion.metrics.anomaly import image_metrics, pixel_metrics
from lit_diffusion.noise import GaussianNoise, SimplexNoise, build_noise
from lit_diffusion.processes.discrete_vp import DiscreteVP
from lit_diffusion.randomness import PerImageGenerator, randn
from lit_diffusion.tasks import anomaly_map, image_scores, reconstruct
from lit_diffusion.tasks.sdedit import sigma_at

ANODDPM = {"algorithm": "ancestral", "steps": 1000}  # AnoDDPM: every step of the T = 1000 chain from λ down


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------- simplex noise


def radial_power(noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean power spectrum of (B, 1, N, N) fields and each frequency's radius in cycles per pixel."""
    power = (torch.fft.fft2(noise[:, 0].double()).abs() ** 2).mean(0)
    f = torch.fft.fftfreq(noise.shape[-1], dtype=torch.float64)
    return power, (f[:, None] ** 2 + f[None, :] ** 2).sqrt()


@pytest.mark.parametrize("scale", [4.0, 8.0, 16.0])
def test_one_octave_of_simplex_noise_has_its_power_at_the_configured_frequency(scale):
    noise = SimplexNoise(scale=scale, octaves=1).sample((32, 1, 64, 64), torch.Generator().manual_seed(0), "cpu")
    flat = noise.flatten(1).double()
    assert flat.mean(1).abs().max() < 1e-6 and (flat.var(1, correction=0) - 1).abs().max() < 1e-6
    power, radius = radial_power(noise)
    band = (radius >= 0.5 / scale) & (radius <= 2 / scale)  # the octave around 1/scale cycles per pixel
    assert power[band].sum() / power.sum() > 0.85
    centroid = (power * radius).sum() / power.sum()
    assert 0.9 < float(centroid * scale) < 1.25  # features of about `scale` pixels


def test_more_octaves_and_persistence_move_power_to_higher_frequencies():
    generator = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    centroids = []
    for octaves, persistence in ((1, 0.8), (3, 0.5), (3, 0.8), (3, 1.0)):
        noise = SimplexNoise(16.0, octaves, persistence).sample((16, 1, 64, 64), generator(), "cpu")
        power, radius = radial_power(noise)
        centroids.append(float((power * radius).sum() / power.sum()))
    assert centroids == sorted(centroids) and centroids[-1] > 2 * centroids[0], centroids
    white_power, _ = radial_power(torch.randn(16, 1, 64, 64, generator=generator()))
    simplex_power, radius = radial_power(SimplexNoise(16.0, 1).sample((16, 1, 64, 64), generator(), "cpu"))
    low = radius < 1 / 16
    assert simplex_power[low].sum() / simplex_power.sum() > 5 * white_power[low].sum() / white_power.sum()


def test_simplex_noise_depends_only_on_each_images_stream_and_binds_to_samplers():
    noise = SimplexNoise(scale=7.0, octaves=3)
    full = noise.sample((5, 2, 28, 28), PerImageGenerator(0, 0, 5), "cpu")
    part = noise.sample((2, 2, 28, 28), PerImageGenerator(0, 3, 2), "cpu")
    assert torch.equal(full[3:], part)
    assert not torch.allclose(full[:, 0], full[:, 1])  # channels are independent fields
    bound = noise.bind(PerImageGenerator(0, 0, 5))
    assert torch.equal(randn((5, 2, 28, 28), bound, torch.device("cpu")), full)
    gaussian = PerImageGenerator(0, 0, 5)
    assert GaussianNoise().bind(gaussian) is gaussian
    assert build_noise({"name": "simplex", "scale": 7.0, "octaves": 3}).spec() == noise.spec()
    with pytest.raises(UserError, match="unknown noise"):
        build_noise({"name": "perlin"})
    with pytest.raises(UserError, match="octaves"):
        SimplexNoise(octaves=0)


# ------------------------------------------------------------------------------- reconstruction (closed form)


def reconstruction_error_cov(sigma: float) -> torch.Tensor:
    """Cov(x̂ − x) for x ~ N(μ, Σ), x̂ an exact posterior sample given x + σε: (I − G)Σ(I − G)ᵀ + σ²GGᵀ +
    (Σ − GΣ) with G = Σ(Σ + σ²I)⁻¹, which simplifies to 2σ²Σ(Σ + σ²I)⁻¹."""
    return 2 * sigma**2 * DATA.cov @ torch.linalg.inv(DATA.cov + sigma**2 * torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize("t0", [0.1, 0.3])
def test_partial_diffusion_reconstruction_error_has_the_closed_form_distribution(t0):
    process = DiscreteVP(1000)
    x = DATA.sample(20000, torch.Generator().manual_seed(1))
    result = reconstruct(DATA.denoiser, process, x, ANODDPM, torch.Generator().manual_seed(0), t0=t0)
    assert result.nfe == round(t0 * 1000)  # λ = t0 T steps back, AnoDDPM's forward_backward
    error = (result.images - x).double()
    expected = reconstruction_error_cov(sigma_at(process, t0))
    assert error.mean(0).abs().max() < 0.02
    assert (torch.cov(error.T) - expected).abs().max() < 0.02


def test_small_lambda_returns_the_input_and_scores_grow_with_an_injected_deviation():
    process = DiscreteVP(1000)
    x = DATA.sample(2000, torch.Generator().manual_seed(2))
    tiny = reconstruct(DATA.denoiser, process, x, ANODDPM, torch.Generator().manual_seed(0), t0=0.001)
    assert tiny.nfe == 1 and (tiny.images - x).pow(2).mean().sqrt() < 1.5 * sigma_at(process, 0.001)  # σ ≈ 0.01
    direction = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64) / 3**0.5
    scores = []
    for size in (0.0, 1.0, 2.0, 4.0):
        shifted = x + size * direction
        out = reconstruct(DATA.denoiser, process, shifted, ANODDPM, torch.Generator().manual_seed(0), t0=0.3)
        scores.append(image_scores(anomaly_map(shifted.view(-1, 3, 1, 1), out.images.view(-1, 3, 1, 1))))
    means = [float(s.mean()) for s in scores]
    assert means == sorted(means) and means[-1] > 2 * means[0], means
    targets = torch.cat([torch.zeros(2000), torch.ones(2000)])
    assert image_metrics(torch.cat([scores[0], scores[-1]]), targets)["image_auroc"] > 0.99


# ------------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def simplex_checkpoint(tmp_path_factory):
    """A tiny DDPM trained two steps with AnoDDPM's simplex noise (scaled to 28 px) by the training entry's function."""
    tiny = [o for o in TINY if not o.startswith(("callbacks.sample_grid", "trainer.max_steps"))]
    return train_in_process(tmp_path_factory.mktemp("anoddpm"), *tiny, "trainer.max_steps=2",
                            "callbacks.evaluation=null", "+model.noise={name: simplex, scale: 7.0, octaves: 3}")


def composed(config: str, *overrides: str):
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        return compose(config, overrides=list(overrides))


def test_anomaly_entry_one_class_and_synthetic_end_to_end(simplex_checkpoint, tmp_path):
    common = [f"ckpt={simplex_checkpoint}", "sampler=ancestral", "sampler.steps=20", "lambda=0.3", "n=12"]
    run_cli("lit_diffusion.anomaly", *common, "normal_classes=[1]", "batch_size=8", f"out={tmp_path / 'a'}",
            cwd=tmp_path)
    result = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert result["noise"] == result["training_noise"] == {"name": "simplex", "scale": 7.0, "octaves": 3,
                                                           "persistence": 0.8}
    assert result["nfe"] == result["steps_taken"] == 6 and result["protocol"]["normal_classes"] == [1]
    assert {"image_auroc", "image_auprc"} <= set(result["metrics"]) and result["n_images"] == 12
    with (tmp_path / "a" / "scores.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(r["target"]) for r in rows] == [int(r["label"] != "1") for r in rows]
    maps = np.load(tmp_path / "a" / "maps.npz")
    assert maps["maps"].shape == (12, 1, 28, 28) and np.allclose(maps["scores"], [float(r["score"]) for r in rows])
    # the same through evaluate, another batch size: image i depends only on (seed, i)
    evaluate(composed("evaluate", "task=anomaly", *common, "normal_classes=[1]", "batch_size=5",
                      f"out={tmp_path / 'b'}"))
    assert np.array_equal(maps["scores"], np.load(tmp_path / "b" / "maps.npz")["scores"])
    result = anomaly_detection(composed("anomaly", *common, "synthetic=mixed", "noise=gaussian", "error=abs",
                                        "aggregate=top", f"out={tmp_path / 'c'}"))
    assert result["noise"] == {"name": "gaussian"} and result["n_images"] == 24
    assert {"pixel_auroc", "pixel_auprc", "dice", "iou"} <= set(result["metrics"])
    assert all((tmp_path / "c" / f"{name}.png").is_file() for name in ("input", "reconstruction", "map", "mask"))


def test_anomaly_entry_bad_input_is_one_user_error(simplex_checkpoint, tmp_path):
    for overrides, message in ((["synthetic=mixed", "normal_classes=[1]"], "choose one ground truth"),
                               (["error=cube"], "error must be one of"),
                               (["synthetic=scratch"], "SyntheticAnomaly kind"),
                               (["lambda=null"], "exactly one of lambda")):
        with pytest.raises(Exception) as error:  # Hydra wraps errors of constructors (the entry point unwraps them)
            anomaly_detection(composed("anomaly", f"ckpt={simplex_checkpoint}", *overrides, f"out={tmp_path}"))
        cause = error.value if isinstance(error.value, UserError) else error.value.__cause__
        assert isinstance(cause, UserError) and message in str(cause)
    with pytest.raises(UserError, match="evaluate has no task 'repaint'"):
        evaluate(composed("evaluate", "task=repaint", f"ckpt={simplex_checkpoint}"))


# --------------------------------------------------------------------------------------------- data and metrics


def test_classes_keep_only_those_training_labels_and_every_validation_label():
    data = MNISTDataModule(classes=[3, 5], batch_size=8)
    data.setup()
    assert set(item_labels(data.train_set)) == {3, 5} and len(data.train_set) > 800
    assert set(item_labels(data.val_set)) == set(range(10))
    assert all(data.train_set[i]["label"] in (3, 5) for i in range(0, len(data.train_set), 97))
    with pytest.raises(UserError, match="no training image of these classes"):
        MNISTDataModule(classes=[11]).setup()


@pytest.fixture(scope="module")
def digits():
    data = MNISTDataModule(batch_size=8)
    data.setup()
    return [data.val_set[i]["image"] for i in range(20)]


@pytest.mark.parametrize("kind", ["patch", "stroke", "intensity", "mixed"])
def test_synthetic_anomaly_masks_are_exactly_the_changed_pixels(kind, digits):
    anomaly = SyntheticAnomaly(kind)
    for index, image in enumerate(digits):
        sample = anomaly({"image": image}, torch.Generator().manual_seed(index))
        anomalous, mask = sample["anomalous"], sample["anomaly_mask"]
        changed = (anomalous - image).abs().amax(0, keepdim=True)
        assert mask.shape == (1, 28, 28) and 0 < mask.sum() < 0.5 * mask.numel()
        assert torch.equal(mask.bool(), changed > 0.1) and torch.equal(anomalous[:, ~mask[0].bool()],
                                                                     image[:, ~mask[0].bool()])
        assert anomalous.min() >= -1 and anomalous.max() <= 1
        again = anomaly({"image": image}, torch.Generator().manual_seed(index))
        assert torch.equal(again["anomaly_mask"], mask)  # a function of the item's generator only


def test_synthetic_anomaly_kinds_do_what_they_say():
    image = torch.linspace(-1, 1, 32 * 32).view(1, 32, 32)
    generator = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    patch = SyntheticAnomaly("patch", min_change=0.0)
    pasted = patch.patch(image, generator())
    rows, cols = patch.box.hole(32, 32, generator())  # the same draws: the target rectangle
    source = pasted[:, rows, cols].flip(-1, -2)  # a 180° rotation of a rectangle found elsewhere in the image
    found = [(t, l) for t in range(33 - source.shape[1]) for l in range(33 - source.shape[2])
             if torch.equal(image[:, t:t + source.shape[1], l:l + source.shape[2]], source)]
    assert len(found) == 1
    shifted = SyntheticAnomaly("intensity").intensity(image, generator())
    delta = shifted - image
    assert ((delta == 0) | (delta.abs() >= 0.5) | (shifted.abs() == 1)).all() and (delta != 0).any()
    stroke = SyntheticAnomaly("stroke")(
        {"image": torch.full((1, 32, 32), -1.0)}, generator())
    assert set(stroke["anomalous"].unique().tolist()) == {-1.0, 1.0}  # white strokes on a black image
    with pytest.raises(UserError, match="sizes"):
        SyntheticAnomaly(max_size=0.9)


def test_metrics_of_separable_and_known_cases():
    scores, targets = torch.tensor([0.1, 0.2, 0.3, 0.7, 0.8]), torch.tensor([0, 0, 0, 1, 1])
    assert image_metrics(scores, targets) == {"image_auroc": 1.0, "image_auprc": 1.0, "n_normal": 3, "n_anomalous": 2}
    assert image_metrics(scores.flip(0), targets)["image_auroc"] == 0.0
    assert image_metrics(scores, torch.zeros(5)) == {"n_normal": 5, "n_anomalous": 0}  # one class: no AUROC
    masks = torch.zeros(4, 1, 8, 8)
    masks[:, :, 2:5, 3:6] = 1
    perfect = pixel_metrics(0.9 * masks + 0.05, masks)
    assert perfect["pixel_auroc"] == 1.0 and perfect["dice"] == 1.0 and perfect["iou"] == 1.0
    half = masks.clone()
    half[:, :, 2:5, 3:4] = 0  # a third of the anomaly missed, nothing else flagged
    found = pixel_metrics(half * 0.9 + 0.05, masks)
    assert found["dice"] == pytest.approx(2 * 2 / (2 + 3)) and found["iou"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pixel_metrics(masks * 2, masks)


def write_mvtec(root: Path, size: int = 40) -> Path:
    """A tiny MVTec AD category in the archive's layout: 4 good training images, 2 good and 3 defective test
    images of two defect types with their masks."""
    rng = np.random.default_rng(0)
    folder = root / "bottle"
    files = {"train/good": 4, "test/good": 2, "test/crack": 2, "test/scratch": 1}
    for sub, count in files.items():
        (folder / sub).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / sub / f"{i:03d}.png")
            if sub.startswith("test/") and sub != "test/good":
                mask = np.zeros((size, size), dtype=np.uint8)
                mask[5 + i: 15 + i, 10:30] = 255
                (folder / "ground_truth" / sub[5:]).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(folder / "ground_truth" / sub[5:] / f"{i:03d}_mask.png")
    return root


def test_mvtec_layout_loads_labels_and_masks(tmp_path):
    root = write_mvtec(tmp_path / "mvtec")
    data = MVTecADDataModule(root=str(root), category="bottle", image_size=20, batch_size=2)
    data.setup()
    assert len(data.train_set) == 4 and len(data.val_set) == 5 and data.num_classes == 3
    samples = [data.val_set[i] for i in range(5)]
    assert [s["label"] for s in samples] == [0, 0, 1, 1, 2]  # good, crack, scratch (sorted)
    masks = [s["anomaly_mask"] for s in samples]
    assert all(m.shape == (1, 20, 20) and m.dtype == bool for m in masks)
    assert not masks[0].any() and masks[2].sum() == 5 * 10 and masks[2][0, 2:7, 5:15].all()  # halved by resizing
    assert samples[0]["image"].shape == (3, 20, 20)
    (root / "bottle" / "ground_truth" / "scratch" / "000_mask.png").unlink()
    with pytest.raises(UserError, match="has no mask"):
        MVTecADDataModule(root=str(root), image_size=20, batch_size=2).setup()
    with pytest.raises(UserError, match="mvtec-ad"):
        MVTecADDataModule(root=str(tmp_path / "nowhere"), batch_size=2).setup()


def test_anomaly_entry_scores_dataset_masks(simplex_checkpoint, tmp_path):
    root = write_mvtec(tmp_path / "mvtec", size=28)
    result = anomaly_detection(composed("anomaly", f"ckpt={simplex_checkpoint}", "data=mvtec", f"data.root={root}",
                                        "data.image_size=28", "data.channels=1", "data.batch_size=2",
                                        "normal_classes=[0]", "sampler.steps=10", f"out={tmp_path / 'out'}"))
    assert result["n_images"] == 5 and result["metrics"]["n_anomalous"] == 3
    assert result["metrics"]["anomalous_pixels"] == 3 * 10 * 18 and "pixel_auroc" in result["metrics"]  # 28-px edge
    assert result["protocol"]["ground_truth"] == "labels [0] normal, the others anomalous"
