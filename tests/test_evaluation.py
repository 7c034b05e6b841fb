"""Evaluation: parity with torch-fidelity, metric sanity (self-FID ≈ 0, FID grows with noise, KID unbiased,
IS of a uniform classifier), the reference cache key, the callback and the evaluate/report entry points."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image

from cli import run_cli, train_tiny
from lit_diffusion.errors import UserError
from lit_diffusion.evaluate import evaluate
from lit_diffusion.metrics import (IS_SKIPPED, FeatureExtractor, build_extractor, dataset_reference, extract,
                                   feature_metrics, register_extractor)
from lit_diffusion.metrics.features import fid_helper_state_dict
from lit_diffusion.metrics.images import dataset_images, folder_images
from lit_diffusion.metrics.scores import fid
from lit_diffusion.report import plot, report

MNIST = {"_target_": "lit_diffusion.datamodules.MNISTDataModule", "variant": "bundled_5k", "image_size": 28,
         "channels": 1, "val_fraction": 0.1, "seed": 0, "batch_size": 64}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_DIFFUSION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return torch.cat(list(dataset_images(MNIST, "train", 1000)))


def features(images: torch.Tensor) -> torch.Tensor:
    return extract(build_extractor("random_conv"), [images])[0]


def write_folder(path, images: torch.Tensor) -> None:
    path.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy()).save(path / f"{i:03d}.png")


def test_fid_matches_torch_fidelity_with_the_same_weights(tmp_path, digits):
    """Our FID of two folders == torch-fidelity's calculate_metrics on them, with the fid-helper weights."""
    import torch_fidelity
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    write_folder(tmp_path / "a", digits[:12])
    write_folder(tmp_path / "b", digits[12:24])
    extractor = build_extractor("inception")
    assert not extractor.has_classifier and torch.isnan(extractor.net.fc.weight).all()  # never a fake classifier
    ours = fid(*(extract(extractor, folder_images(tmp_path / d))[0] for d in "ab"))

    state = {k: v for k, v in extractor.net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(fid_helper_state_dict(list(state), {k: v.shape for k, v in state.items()}), tmp_path / "w.pth")
    theirs = torch_fidelity.calculate_metrics(
        input1=str(tmp_path / "a"), input2=str(tmp_path / "b"), fid=True, cuda=False, cache=False, verbose=False,
        feature_extractor_weights_path=str(tmp_path / "w.pth"))["frechet_inception_distance"]
    assert FeatureExtractorInceptionV3 is type(extractor.net)
    assert ours == pytest.approx(theirs, rel=1e-3) and ours > 0


def test_fid_of_a_split_with_itself_is_zero_and_grows_with_noise(digits):
    clean = features(digits)
    assert abs(fid(clean, clean)) < 1e-6
    generator = torch.Generator().manual_seed(0)
    scores = []
    for sigma in (0.05, 0.1, 0.2, 0.4):
        noisy = (digits.float() + 255 * sigma * torch.randn(digits.shape, generator=generator)).clamp(0, 255)
        scores.append(fid(features(noisy.round().to(torch.uint8)), clean))
    assert all(a < b for a, b in zip(scores, scores[1:])), scores


def test_kid_is_unbiased_for_the_same_distribution(digits):
    a, b = features(digits[:500]), features(digits[500:])
    same, _ = feature_metrics(["kid"], a, b, None, kid_subset_size=200)
    noisy = (digits[500:].float() + 100 * torch.randn(digits[500:].shape)).clamp(0, 255).to(torch.uint8)
    different, _ = feature_metrics(["kid"], a, features(noisy), None, kid_subset_size=200)
    # subsets overlap, so the spread of one subset's estimate (kid_std) is the scale of the mean's error
    assert abs(same["kid_mean"]) < same["kid_std"]
    assert different["kid_mean"] > 5 * same["kid_std"]


def test_reference_cache_is_keyed_by_every_field():
    extractor = build_extractor("random_conv")
    base = dataset_reference(extractor, MNIST, "train", 20)
    assert not base.cached and base.features.shape[0] == 20
    assert dataset_reference(extractor, {**MNIST, "batch_size": 7}, "train", 20).cached  # loader keys don't count
    changes = [(MNIST, "val", 20, extractor), (MNIST, "train", 21, extractor),
               ({**MNIST, "image_size": 16}, "train", 20, extractor),
               ({**MNIST, "seed": 1}, "train", 20, extractor),
               (MNIST, "train", 20, build_extractor("random_conv", seed=1))]
    for data, split, count, ext in changes:
        ref = dataset_reference(ext, data, split, count)
        assert not ref.cached and ref.id != base.id, (split, count)
    again = dataset_reference(extractor, MNIST, "train", 20)
    assert again.cached and torch.equal(again.features, base.features)


class UniformClassifier(FeatureExtractor):
    """Stand-in classifier: confident in class (image index encoded in pixel 0) mod K."""

    name, weights_id, preprocessing, has_classifier = "uniform_classifier", "test", "none", True

    def __init__(self, classes: int = 5):
        super().__init__()
        self.classes = classes

    def forward(self, images):
        labels = images[:, 0, 0, 0].long() % self.classes
        return images.float().flatten(1)[:, :4], 30.0 * torch.nn.functional.one_hot(labels, self.classes).float()


def test_inception_score_of_a_uniform_classifier_is_the_number_of_classes():
    register_extractor("uniform_classifier", UniformClassifier)
    images = torch.zeros(500, 1, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(500) % 250
    _, logits = extract(build_extractor("uniform_classifier"), [images])
    values, skipped = feature_metrics(["is"], None, None, logits, is_splits=1)  # one split: exactly uniform
    assert values["is_mean"] == pytest.approx(5.0, rel=1e-3) and not skipped
    values, skipped = feature_metrics(["is"], None, None, None)
    assert "is_mean" not in values and skipped == [IS_SKIPPED]


@pytest.mark.slow
def test_callback_logs_fid_and_evaluate_and_report_entries(tmp_path, cache, digits):
    run_dir = tmp_path / "run"
    proc = train_tiny(run_dir, "callbacks.evaluation.every_n_steps=2", "callbacks.evaluation.num_samples=8",
                      "callbacks.evaluation.batch_size=8", "callbacks.evaluation.extractor=random_conv",
                      "callbacks.evaluation.ref_n=32", "callbacks.evaluation.sampler.steps=2",
                      f"callbacks.evaluation.best_checkpoint={run_dir}/best_fid.ckpt")
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    curve = {int(r["step"]): float(r["eval/fid"]) for r in rows if r.get("eval/fid")}
    assert sorted(curve) == [2, 4] and all(v > 0 for v in curve.values()), proc.stdout
    assert any(r.get("eval/kid") for r in rows) and (run_dir / "best_fid.ckpt").is_file()
    assert list((cache / "reference").glob("*.npz"))

    results = tmp_path / "results.csv"
    out = run_cli("lit_diffusion.evaluate", f"ckpt={run_dir}/checkpoints/last.ckpt", "extractor=random_conv",
                  "n=16", "seeds=[0,1]", "ref_n=64", "metrics=[fid,kid,pr,is]", "sampler.steps=2",
                  f"out={tmp_path}/r.json", f"csv={results}", cwd=tmp_path)
    result = json.loads((tmp_path / "r.json").read_text())
    assert IS_SKIPPED in out.stdout and result["skipped"] == [IS_SKIPPED]
    assert set(result["summary"]["fid"]) == {"mean", "std", "min"} and len(result["runs"]) == 2
    for field in ("n", "reference", "sampler", "nfe", "weights", "seeds", "checkpoint_sha256", "extractor_weights",
                  "versions", "wall_seconds", "guidance_scale"):
        assert field in result, field
    assert result["nfe"] == 2 and result["weights"] == "ema" and result["reference"]["cache_hit"] is False

    write_folder(tmp_path / "a", digits[:40])
    write_folder(tmp_path / "b", digits[40:80])
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):  # in-process: no second start-up
        evaluate(compose("evaluate", [f"fake={tmp_path}/a", f"real={tmp_path}/b", "extractor=random_conv",
                                      "metrics=[fid,kid]", "kid_subset_size=20", f"out={tmp_path}/f.json",
                                      f"csv={results}"]))
        assert json.loads((tmp_path / "f.json").read_text())["n"] == 40
        assert len(list(csv.DictReader(open(results)))) == 2
        report(compose("report", [f"results={results}", f"out={tmp_path}/table"]))
    table = (tmp_path / "table.md").read_text()
    assert "ddpm_mnist" in table and "3.17" in table  # our rows beside the published DDPM CIFAR-10 row


def test_report_plots_caption_accuracy_and_kid_against_the_guidance_scale(tmp_path):
    """plot=guidance: one line per experiment, its points in w order, from evaluate's CSV columns; rows without a
    guidance scale are left out, and a CSV with none is one clear error."""
    rows = [{"name": name, "guidance_scale": str(w), "caption_accuracy": str(acc), "kid_mean": str(kid)}
            for name, points in (("a", ((4, 0.9, 0.02), (0, 0.1, 0.03), (1, 0.6, 0.01))), ("b", ((0, 0.2, 0.05),)))
            for w, acc, kid in points] + [{"name": "unguided", "fid": "3.0"}]
    left, right = plot(rows, "guidance", tmp_path / "direct.png").axes
    lines = {line.get_label(): line for line in left.get_lines()}
    assert set(lines) == {"a", "b"}
    assert list(lines["a"].get_xdata()) == [0, 1, 4] and list(lines["a"].get_ydata()) == [0.1, 0.6, 0.9]
    assert list(right.get_lines()[0].get_ydata()) == pytest.approx([30, 10, 20])  # KID × 10³
    results = tmp_path / "results.csv"
    with results.open("w", newline="") as file:
        writer = csv.DictWriter(file, ["name", "guidance_scale", "caption_accuracy", "kid_mean", "fid"])
        writer.writeheader()
        writer.writerows(rows)
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        report(compose("report", [f"results={results}", f"out={tmp_path}/table", "plot=guidance"]))
        image = Image.open(tmp_path / "table_accuracy_kid_vs_guidance.png")
        assert image.size[0] > image.size[1] > 200  # two panels side by side
        results.write_text("name,fid\nunguided,3.0\n")
        with pytest.raises(UserError, match="guidance scale"):
            report(compose("report", [f"results={results}", f"out={tmp_path}/table", "plot=guidance"]))
