"""Segmentation: MNIST canvases whose labels match their images, diffusion-feature hooks, the pixel ensemble,
and the three methods end to end (features, mask diffusion, UNet from scratch) on tiny networks."""

from __future__ import annotations

import json

import pytest
import torch
from cli import train_in_process
from hydra import compose, initialize_config_module

from lit_diffusion.datamodules.mnist_canvas import NUM_CLASSES, MNISTCanvasDataModule
from lit_diffusion.errors import UserError
from lit_diffusion.metrics.segmentation import segmentation_metrics
from lit_diffusion.networks import UNet
from lit_diffusion.segment import PALETTE, palette, segment
from lit_diffusion.tasks.features import DecoderFeatures
from lit_diffusion.tasks.segmentation import PixelEnsemble


pytestmark = pytest.mark.usefixtures("one_thread")


def test_canvas_labels_match_the_images_and_are_deterministic():
    data = MNISTCanvasDataModule(batch_size=8)
    data.setup()
    samples = [data.val_set[i] for i in range(40)]
    for sample in samples:
        image, labels = sample["image"], sample["segmentation"]
        assert image.shape == (1, 32, 32) and labels.shape == (32, 32) and labels.max() <= 10
        assert torch.equal(labels > 0, (image[0] + 1) / 2 > data.threshold)  # digit pixels are the bright ones
    digits = {len(set(s["segmentation"].unique().tolist()) - {0}) for s in samples}
    assert digits <= {1, 2, 3, 4} and len(digits) >= 3
    again = MNISTCanvasDataModule(batch_size=8)
    again.setup()
    assert torch.equal(again.val_set[7]["segmentation"], samples[7]["segmentation"])
    assert not torch.equal(again.train_set[7]["image"], samples[7]["image"])  # the splits draw other digits
    few = MNISTCanvasDataModule(batch_size=8, labelled=3, target="segmentation")
    few.setup()
    assert len(few.train_set) == 9 and torch.equal(few.train_set[4]["canvas"], few.train_set[1]["canvas"])
    sample = few.train_set[1]
    assert torch.equal(sample["canvas"], again.train_set[1]["image"])
    assert sample["image"].shape == (NUM_CLASSES, 32, 32) and torch.equal(sample["image"].argmax(0),
                                                                          sample["segmentation"])
    assert set(sample["image"].unique().tolist()) == {-1.0, 1.0}
    with pytest.raises(UserError, match="random_flip"):
        MNISTCanvasDataModule(random_flip=True)


class TinyModel:
    """What the feature extractor needs of a DiffusionModule: a UNet, a process, a sample shape, ``predict``."""

    def __init__(self):
        from lit_diffusion.processes.discrete_vp import DiscreteVP

        torch.manual_seed(0)
        self.network = UNet(in_channels=1, image_size=16, base_channels=8, channel_mult=(1, 2),
                            num_res_blocks=1, attention_resolutions=(), num_groups=4)
        self.process, self.sample_shape, self.device, self.seen = DiscreteVP(1000), (1, 16, 16), "cpu", []

    def predict(self, x, sigma, cond=None):
        self.seen.append(float(sigma[0]))
        return self.network(x, sigma)


def test_decoder_feature_hooks_catch_the_chosen_blocks_at_each_level():
    model = TinyModel()
    assert [len(model.network.up)] == [4]  # 2 levels × (1 + 1) blocks, coarse to fine
    features = DecoderFeatures(model, blocks=[1, 3], levels=[0.05, 0.25])
    out = features(torch.zeros(3, 1, 16, 16))
    # block 1 ends the coarse level (16 channels, upsampled to 16 px inside it); block 3: 8 channels at 16 px
    assert out.shape == (3, 2 * (16 + 8), 16, 16)
    assert model.seen == [features.sigmas[0], features.sigmas[1]] and features.sigmas[0] < features.sigmas[1]
    assert not torch.allclose(out[:, :24], out[:, 24:])  # the two noise levels give different features
    features.remove()
    assert all(not block._forward_hooks for block in model.network.up)
    with pytest.raises(UserError, match="decoder blocks"):
        DecoderFeatures(model, blocks=[4], levels=[0.1])


def test_pixel_ensemble_learns_a_separable_labelling_by_majority_vote():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(3, (600,), generator=generator)
    features = torch.nn.functional.one_hot(labels, 3).float() * 3 + torch.randn(600, 3, generator=generator) * 0.3
    ensemble = PixelEnsemble(3, 3, members=3)
    ensemble.fit(features, labels, steps=150, batch_size=64, lr=1e-2, seed=0)
    grid = features[:64].T.reshape(1, 3, 8, 8)
    predicted = ensemble(grid)
    assert predicted.shape == (1, 8, 8) and torch.equal(predicted.flatten(), labels[:64])
    metrics = segmentation_metrics(predicted, labels[:64].view(1, 8, 8), 3)
    assert metrics["miou"] == metrics["dice"] == metrics["pixel_accuracy"] == 1.0


def test_palette_keeps_the_eleven_colours_and_adds_distinct_ones_for_any_class_count():
    colours = palette(40)
    assert torch.equal(colours[:11], PALETTE) and torch.equal(palette(4), PALETTE[:4])
    assert len(colours.unique(dim=0)) == 40 and colours.min() >= 0 and colours.max() <= 1


# ------------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two-step tiny runs of segfeatures_mnist_canvas and segdiff_mnist_canvas through the training entry point."""
    root = tmp_path_factory.mktemp("segmentation")
    out = {}
    for name in ("segfeatures_mnist_canvas", "segdiff_mnist_canvas"):
        out[name] = train_in_process(root / name, f"experiment={name}", "network.base_channels=8", "data.batch_size=8",
                                     "data.labelled=10", "trainer.max_steps=2", "trainer.val_check_interval=2",
                                     "+trainer.limit_val_batches=1")
    return out


def run_segment(*overrides: str) -> dict:
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        return segment(compose("segment", overrides=[*overrides, "n=8"]))


def test_three_methods_end_to_end(checkpoints, tmp_path):
    features = run_segment("method=features", f"ckpt={checkpoints['segfeatures_mnist_canvas']}", "labelled=2",
                           "features.members=2", "features.steps=5", "features.blocks=[0,3]", "features.max_pixels=1500",
                           "batch_size=1", f"out={tmp_path / 'f'}")  # a draw of 1,500 of the 2 × 32 × 32 pixels
    assert features["labelled_images"] == 2 and features["training_pixels"] == 1500
    assert features["feature_dim"] == 3 * (32 + 16) and features["nfe"] == 3  # 3 levels × (block 0 + block 3)
    diffusion = run_segment("method=diffusion", f"ckpt={checkpoints['segdiff_mnist_canvas']}", "samples=2",
                            "sampler.steps=2", f"out={tmp_path / 'd'}")
    assert diffusion["nfe"] == 2 * 2 and diffusion["labelled_images"] == 10
    assert diffusion["uncertainty"]["mean_variance_right_pixels"] >= 0
    unet = run_segment("method=unet", "data=mnist_canvas", "labelled=2", "unet.steps=3", f"out={tmp_path / 'u'}")
    assert unet["nfe"] == 1 and unet["parameters"] > 0
    for name, result in (("f", features), ("d", diffusion), ("u", unet)):
        assert 0 <= result["metrics"]["miou"] <= 1 and len(result["metrics"]["iou_per_class"]) == NUM_CLASSES
        assert json.loads((tmp_path / name / "metrics.json").read_text())["metrics"] == result["metrics"]
        assert (tmp_path / name / "prediction.png").is_file()
    assert (tmp_path / "d" / "uncertainty.png").is_file()
    with pytest.raises(UserError, match="ckpt=null"):
        run_segment("method=unet", f"ckpt={checkpoints['segfeatures_mnist_canvas']}")
    with pytest.raises(UserError, match="diffuses segmentation maps"):
        run_segment("method=diffusion", f"ckpt={checkpoints['segfeatures_mnist_canvas']}")
    with pytest.raises(UserError, match="not a segmentation DataModule.*data=mnist_canvas"):
        run_segment("method=unet", "data=mnist")
