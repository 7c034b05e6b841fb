"""SR3 (continuous noise levels, concat conditioning), its regression baseline, the consistency metric in closed
form, Palette's one-of-several degradations, and ``run experiment=sr3_fashion_mnist`` / ``palette_fashion_mnist``
with ``evaluate task=sr`` / ``task=palette`` end to end on tiny checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli import run_cli, train_tiny
from hydra import compose, initialize_config_module
from torch.utils.data import DataLoader

from lit_diffusion.datamodules.pairs import LowResolution, OneOf
from lit_diffusion.edit import psnr_ssim
from lit_diffusion.errors import UserError
from lit_diffusion.config import to_plain
from lit_diffusion.image_to_image import consistency, image_to_image
from lit_diffusion.metrics.images import dataset_split
from lit_diffusion.metrics.judge import Judge, classification_accuracy
from lit_diffusion.models import SR3, Regression
from lit_diffusion.models.sr3 import piecewise_uniform_gamma

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
UNET = {"_target_": "lit_diffusion.networks.UNet", "in_channels": 1, "image_size": 8, "base_channels": 8,
        "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [4], "num_groups": 4}
LOW_RES = {"low_res": {"_target_": "lit_diffusion.conditioning.ConcatEmbedder", "channels": 1, "input_key": "low_res"}}


def tiny(cls, **kwargs):
    torch.manual_seed(0)
    model = cls(network=UNET, process={"_target_": "lit_diffusion.processes.DiscreteVP", "num_timesteps": 100},
                optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
                sampler={"algorithm": "ddim", "steps": 5}, image_shape=[1, 8, 8],
                conditioner={"embedders": LOW_RES}, **kwargs)
    for param in model.network.parameters():  # zero-initialised output layers would hide the conditions
        if not param.any():
            torch.nn.init.normal_(param, std=0.1)
    return model.eval()


def test_noise_levels_are_piecewise_uniform_in_gamma():
    """p(γ) = Σ_t (1/T) U(γ_{t−1}, γ_t), γ_0 = 1: each interval holds 1/T of the mass, spread uniformly in it."""
    gammas = torch.tensor([0.9, 0.5, 0.4, 0.05], dtype=torch.float64)
    torch.manual_seed(0)
    draws = piecewise_uniform_gamma(gammas, 200_000, "cpu")
    edges = torch.cat([torch.ones(1, dtype=torch.float64), gammas])
    for upper, lower in zip(edges[:-1], edges[1:]):
        inside = draws[(draws <= upper) & (draws > lower)]
        assert abs(len(inside) / len(draws) - 0.25) < 0.005
        assert abs(inside.mean().item() - (upper + lower).item() / 2) < 0.002 * (upper - lower).item() + 1e-4
    assert draws.min() >= gammas[-1] and draws.max() <= 1


def test_sr3_trains_on_continuous_levels_with_the_concat_condition():
    model = tiny(SR3)
    torch.manual_seed(1)
    sigma = model.sample_sigma(4096)
    assert len(torch.unique(sigma)) == 4096 and sigma.max() <= model.process.sigma_max * (1 + 1e-9)
    on_grid = (sigma[:, None] == model.process.sigmas[None]).any(1)
    assert not on_grid.any()  # not DDPM's discrete levels
    assert model.network.in_channels + model.network.concat_channels == 2
    x, sigma = torch.randn(2, 1, 8, 8), torch.full((2,), 0.5, dtype=torch.float64)
    low = torch.randn(2, 1, 8, 8)
    cond = model.conditioner({"low_res": low})
    changed = model.conditioner({"low_res": low + 1})
    assert not torch.allclose(model.denoise(x, sigma, cond), model.denoise(x, sigma, changed))


def test_loss_norm_one_is_the_mean_absolute_error():
    l2, l1 = tiny(SR3), tiny(SR3, loss_norm=1)
    x0, cond = torch.randn(3, 1, 8, 8), l2.conditioner({"low_res": torch.randn(3, 1, 8, 8)})
    for model, norm in ((l2, lambda d: d**2), (l1, torch.abs)):
        torch.manual_seed(2)
        loss = model.loss(x0, cond)
        torch.manual_seed(2)
        sigma, eps, x = model.noisy(x0)
        expected = norm(model.predict(x, sigma, cond).raw - eps).mean()  # ε-prediction: the target is ε
        torch.testing.assert_close(loss, expected)
    with pytest.raises(UserError, match="loss_norm"):
        tiny(SR3, loss_norm=3)


def test_regression_baseline_ignores_noise_and_returns_its_prediction_in_one_step():
    model = tiny(Regression)
    low = torch.randn(3, 1, 8, 8)
    cond = model.conditioner({"low_res": low})
    f = model.network(torch.zeros(3, 1, 8, 8), torch.zeros(3), cond)
    for x, s in ((torch.randn(3, 1, 8, 8), 0.3), (torch.randn(3, 1, 8, 8) * 50, 80.0)):
        torch.testing.assert_close(model.denoise(x, torch.full((3,), s, dtype=torch.float64), cond), f)
    result = model.sample(3, {"algorithm": "ddim", "steps": 1}, seed=0, conditions={"low_res": low})
    assert result.nfe == 1
    torch.testing.assert_close(result.images, f.clamp(-1, 1))
    x0 = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(model.loss(x0, cond), ((f - x0) ** 2).mean())  # L2 to x_0, whatever the noise
    with pytest.raises(UserError, match="conditioner"):
        Regression(network=UNET, process={"_target_": "lit_diffusion.processes.DiscreteVP"}, optimizer={},
                    sampler={}, image_shape=[1, 8, 8])


def test_consistency_closed_forms():
    """Antialiased bicubic downsampling keeps constants: an output off by δ everywhere has consistency (δ/2)²
    ([0, 1] pixels); the reference itself has 0; a change the downsampling averages away has (almost) none."""
    torch.manual_seed(3)
    reference = torch.rand(4, 1, 28, 28) - 0.5
    degradation = LowResolution(4)
    assert consistency(reference, reference, degradation) == 0
    assert consistency(reference + 0.2, reference, degradation) == pytest.approx(0.01, rel=1e-5)
    checker = 0.2 * (-1) ** (torch.arange(28)[:, None] + torch.arange(28)[None])
    detail = consistency(reference + checker, reference, degradation)
    assert detail < 1e-3 * 0.01  # a ±0.2 checkerboard is invisible at 7×7, a +0.2 offset is not


@pytest.fixture(scope="module")
def sr3_run(tmp_path_factory):
    if not FASHION_MNIST.is_dir():
        pytest.skip(f"Fashion-MNIST is not installed at {FASHION_MNIST} (apt-get install dataset-fashion-mnist)")
    root = tmp_path_factory.mktemp("sr3")
    runs = {}
    for experiment, steps in (("sr3_fashion_mnist", 3), ("sr3_regression_fashion_mnist", 1), ("palette_fashion_mnist", 2)):
        runs[experiment] = root / experiment
        train_tiny(runs[experiment], f"experiment={experiment}", f"sampler.steps={steps}", "trainer.max_steps=3",
                   "callbacks.sample_grid.num_samples=4", "callbacks.sample_grid.every_n_steps=0")
    return root, runs


def evaluate_sr(ckpt: Path, out: Path, *overrides: str, task: str = "sr") -> dict:
    """``evaluate task=sr`` (or palette) in this process (the entry point itself is run once, below)."""
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"task={task}", f"ckpt={ckpt}", "n=10", "batch_size=4",
                                             "extractor=random_conv", f"out={out}", *overrides])
    return image_to_image(cfg)


@pytest.mark.slow
def test_sr3_experiment_trains_and_evaluate_task_sr_scores_it(sr3_run):
    root, runs = sr3_run
    ckpt = runs["sr3_fashion_mnist"] / "checkpoints" / "last.ckpt"
    assert (runs["sr3_fashion_mnist"] / "samples" / "final.png").is_file()
    run_cli("lit_diffusion.evaluate", "task=sr", f"ckpt={ckpt}", "n=10", "batch_size=4", "extractor=random_conv",
            "sampler.steps=2", "metrics=[psnr,ssim,consistency,fid,kid]", f"out={root / 'sr3'}",
            f"hydra.run.dir={root / 'hydra'}", cwd=root)
    result = json.loads((root / "sr3" / "metrics.json").read_text())
    assert result["nfe"] == 2 and result["n"] == 10 and result["degradation"]["factor"] == 4
    assert set(result["metrics"]) >= {"psnr", "ssim", "consistency", "fid", "kid_mean"}
    assert result["checkpoint_sha256"] and result["seed_derivation"] and (root / "sr3" / "grid.png").is_file()

    # The bicubic baseline's numbers are those of the data's own upsampled inputs.
    bicubic = evaluate_sr(ckpt, root / "bicubic", "task.output=bicubic", "metrics=[psnr,ssim,consistency]")
    assert bicubic["nfe"] == 0
    dataset = dataset_split({**bicubic["data"], "pairs": bicubic["pairs"]}, "val")
    batch = next(iter(DataLoader(dataset, batch_size=10)))
    expected = psnr_ssim(batch["low_res"], batch["image"])
    assert bicubic["metrics"]["psnr"] == pytest.approx(expected["psnr"])
    assert bicubic["metrics"]["ssim"] == pytest.approx(expected["ssim"])
    assert bicubic["metrics"]["consistency"] == pytest.approx(consistency(batch["low_res"], batch["image"],
                                                                          LowResolution(4)))


@pytest.mark.slow
def test_regression_baseline_experiment_samples_in_one_step(sr3_run):
    root, runs = sr3_run
    result = evaluate_sr(runs["sr3_regression_fashion_mnist"] / "checkpoints" / "last.ckpt", root / "reg",
                         "metrics=[psnr,consistency]")
    assert result["nfe"] == 1 and result["sampler"]["steps"] == 1 and set(result["metrics"]) == {"psnr", "consistency"}


def test_one_of_draws_one_degradation_per_item_under_common_keys():
    transform = OneOf({"center": {"_target_": "lit_diffusion.datamodules.pairs.Mask", "kind": "center"},
                       "jpeg": {"_target_": "lit_diffusion.datamodules.pairs.JPEG", "quality": 10}})
    image = torch.rand(1, 8, 8) * 2 - 1
    jpeg = transform.choices["jpeg"]({"image": image}, torch.Generator())["jpeg"]
    masked = transform.choices["center"]({"image": image}, torch.Generator())["masked_image"]
    kinds = []
    for item in range(200):
        out = transform({"image": image}, torch.Generator().manual_seed(item))
        assert set(out) == {"source", "mask"} and out["mask"].shape == (1, 8, 8)
        again = transform({"image": image}, torch.Generator().manual_seed(item))
        assert torch.equal(out["source"], again["source"])  # fixed per (seed, item)
        if out["mask"].all():
            assert torch.equal(out["source"], jpeg)
        else:
            assert torch.equal(out["source"], masked) and out["mask"].mean() == 0.75
        kinds.append(bool(out["mask"].all()))
    assert 70 < sum(kinds) < 130
    with pytest.raises(UserError, match="choice 'center'"):
        OneOf({"center": {"_target_": "lit_diffusion.datamodules.pairs.LowResolution", "factor": 3}}).check((1, 8, 8))


@pytest.mark.slow
def test_palette_experiment_and_evaluate_task_palette_per_degradation(sr3_run):
    root, runs = sr3_run
    ckpt = runs["palette_fashion_mnist"] / "checkpoints" / "last.ckpt"
    assert (runs["palette_fashion_mnist"] / "samples" / "final.png").is_file()
    model = evaluate_sr(ckpt, root / "pal", "task.degradation=uncrop", "metrics=[psnr,masked,diversity]", task="palette")
    assert model["nfe"] == 2 and model["metrics"]["missing_fraction"] == pytest.approx(0.5)
    assert model["metrics"]["pairwise_ssim"] < 1 and model["metrics"]["pairwise_mse"] > 0  # two different samples
    source = evaluate_sr(ckpt, root / "pal_in", "task.degradation=uncrop", "task.output=input",
                         "metrics=[psnr,masked]", task="palette")
    assert source["metrics"]["known_max_abs_error"] == 0  # the input keeps the known half exactly
    jpeg = evaluate_sr(ckpt, root / "pal_jpeg", "task.degradation=jpeg10", "task.output=input", "metrics=[psnr,masked]",
                       task="palette")
    assert "missing_mse" not in jpeg["metrics"] and 15 < jpeg["metrics"]["psnr"] < 40
    with pytest.raises(UserError, match="task.degradation=colorize"):
        evaluate_sr(ckpt, root / "x", "task.degradation=colorize", task="palette")


def test_evaluate_task_sr_errors_are_one_message(tmp_path):
    proc = run_cli("lit_diffusion.evaluate", "task=sr", f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "ckpt=PATH" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(UserError, match="task.output"):
        evaluate_sr(tmp_path / "x.ckpt", tmp_path, "task.output=nearest")
    with pytest.raises(UserError, match="no metrics"):
        evaluate_sr(tmp_path / "x.ckpt", tmp_path, "metrics=[lpips]")


def test_classification_accuracy_is_an_independent_judges_top1(tmp_path, monkeypatch):
    """evaluate's ``accuracy`` (SR3's / Palette's classification accuracy, our judge for their ResNet-50): high on
    real held-out digits with their labels, chance with the labels shuffled, and the judge's own top-1."""
    monkeypatch.setenv("LIT_DIFFUSION_CACHE", str(tmp_path / "cache"))
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        data_cfg = to_plain(compose("config", overrides=["data=mnist"]).data)
    batch = next(iter(DataLoader(dataset_split(data_cfg, "val"), batch_size=300)))
    images, labels = batch["image"], batch["label"]
    result = classification_accuracy(images, labels, data_cfg)
    assert result["accuracy"] > 0.9 and result["judge_held_out_accuracy"] > 0.9
    assert result["accuracy"] == pytest.approx(Judge(data_cfg, heads=(10,)).correct(images, labels).float().mean().item())
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    assert classification_accuracy(images, shuffled, data_cfg)["accuracy"] < 0.25
    with pytest.raises(UserError, match="needs class labels"):
        classification_accuracy(images, None, data_cfg)
