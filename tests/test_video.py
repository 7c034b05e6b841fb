"""Video generation: the Moving MNIST generator and the video-folder DataModule, the factorized space-time UNet,
MCVD's masked conditioning, the video metrics, and the experiment end to end on tiny sizes."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from cli import run_cli

from lit_diffusion.conditioning import Conditioner, IndependentFramesEmbedder, KnownFramesEmbedder
from lit_diffusion.datamodules.frame_masks import FrameMask, frame_mask, known_frames
from lit_diffusion.datamodules.moving_mnist import MovingMNISTDataModule, bouncing_trajectory
from lit_diffusion.datamodules.video_folder import VideoFolderDataModule
from lit_diffusion.errors import UserError
from lit_diffusion.metrics.video import best_of_n, frame_scores, frechet_distance
from lit_diffusion.models import DDPM
from lit_diffusion.networks import UNet, VideoUNet, video_unet

pytestmark = pytest.mark.usefixtures("one_thread")


def moving_mnist(**kwargs) -> MovingMNISTDataModule:
    data = MovingMNISTDataModule(**{"batch_size": 4, "train_size": 40, "val_size": 20, **kwargs})
    data.setup()
    return data


def test_moving_mnist_is_deterministic_per_seed_and_index_and_the_splits_share_no_digit():
    data, again, other = moving_mnist(), moving_mnist(), moving_mnist(seed=1)
    sample = data.train_set[5]
    assert sample["image"].shape == (1, 20, 64, 64) and sample["image"].min() == -1 and sample["image"].max() <= 1
    assert torch.equal(sample["image"], again.train_set[5]["image"])
    assert not torch.equal(sample["image"], data.train_set[6]["image"])
    assert not torch.equal(sample["image"], other.train_set[5]["image"])
    assert 1 <= sample["digits"].sum() <= 2 and not sample["independent"]
    train_digits = {d.numpy().tobytes() for d in data.train_set.dataset.digits}
    assert not train_digits & {d.numpy().tobytes() for d in data.val_set.dataset.digits}


def test_digits_stay_in_frame_and_bounce_with_new_velocities():
    dataset = moving_mnist(image_size=32, digit_size=14, speed=[1.0, 3.0]).train_set.dataset
    for index in range(20):
        video, positions, _ = dataset.video(index)
        assert positions.min() >= 0 and positions.max() <= 32 - 14
        boxes = torch.zeros_like(video, dtype=torch.bool)  # the pixels the digits cover
        for path in positions:
            for t, (top, left) in enumerate(path.tolist()):
                boxes[t, top:top + 14, left:left + 14] = True
        assert video[~boxes].max() == 0 and (video.flatten(1).amax(1) > 0.5).all()  # every frame shows a digit
    path = bouncing_trajectory(torch.Generator().manual_seed(0), 400, 10.0, (1.0, 3.0))
    assert path.min() >= 0 and path.max() <= 10
    steps = path.diff(dim=0)
    flips = ((steps[1:] * steps[:-1]) < 0).any(1).nonzero()[:, 0]
    assert len(flips) > 10  # it bounces
    speeds = steps.norm(dim=1)
    changed = [(speeds[i + 2] - speeds[i]).abs() > 1e-6 for i in flips.tolist() if i + 2 < len(speeds)]
    assert sum(changed) > len(changed) / 2  # and draws a new speed there (SM-MNIST), not a mirror image


def test_joint_training_items_are_independent_frames():
    data = moving_mnist(image_fraction=1.0, frames=6)
    sample = data.train_set[0]
    assert sample["independent"] and sample["image"].shape == (1, 6, 64, 64)
    assert not data.val_set[0]["independent"]  # validation stays videos


def write_videos(root, channels: int = 3):
    """Two classes: a .gif and an .mp4 of 10 frames, and a folder of 7 PNG frames; frame t has intensity 20 t."""
    frames = np.stack([np.full((16, 16, 3), 20 * t, np.uint8) for t in range(10)])
    (root / "a").mkdir(parents=True)
    (root / "b" / "clip").mkdir(parents=True)
    iio.imwrite(root / "a" / "one.gif", frames, duration=100, loop=0)
    iio.imwrite(root / "a" / "two.mp4", frames, fps=10)
    for t in range(7):
        iio.imwrite(root / "b" / "clip" / f"{t:03d}.png", frames[t])
    (root / "b" / "notes.txt").write_text("not a video")


def test_video_folder_reads_gif_mp4_and_frame_folders(tmp_path):
    write_videos(tmp_path / "videos")
    data = VideoFolderDataModule(root=str(tmp_path / "videos"), frames=3, stride=2, clips_per_video=2, image_size=8,
                                 channels=1, batch_size=2, val_fraction=0.0)
    data.setup()
    assert data.classes == ["a", "b"] and len(data.train_set) == 6
    items = [data.train_set[i] for i in range(6)]
    assert all(item["image"].shape == (1, 3, 8, 8) for item in items)
    assert [item["label"] for item in items] == [0, 0, 0, 0, 1, 1]
    levels = [((item["image"].mean((0, 2, 3)) + 1) * 127.5).round() for item in items]
    assert levels[0].tolist() == [0, 40, 80] and levels[1].tolist() == [100, 140, 180]  # the gif: clips at 0 and 5
    assert torch.allclose(levels[2], levels[0], atol=4) and torch.allclose(levels[3], levels[1], atol=4)  # mp4 (lossy)
    assert levels[4].tolist() == [0, 40, 80] and levels[5].tolist() == [40, 80, 120]  # 7 PNG frames: starts 0 and 2
    with pytest.raises(UserError, match="UCF-101"):
        VideoFolderDataModule(root=str(tmp_path / "nowhere"), batch_size=2).setup()


def image_and_video_unets(**extra):
    kwargs = dict(in_channels=1, image_size=16, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(8,), num_groups=4, concat_channels=2)
    torch.manual_seed(0)
    image, video = UNet(**kwargs), VideoUNet(**kwargs, max_frames=8, **extra)
    for parameter in video.parameters():  # no zero-initialised branch: every block acts
        torch.nn.init.normal_(parameter, std=0.3)
    image.load_state_dict({k: v for k, v in video.state_dict().items() if k in image.state_dict()})
    return image, video


def test_temporal_attention_with_one_frame_equals_the_image_model():
    image, video = image_and_video_unets(independent_frames=1)
    x, concat, sigma = torch.randn(3, 1, 5, 16, 16), torch.randn(3, 2, 5, 16, 16), torch.tensor([1.0, 40.0, 900.0])
    per_frame = torch.stack([image(x[:, :, t], sigma, {"concat": concat[:, :, t]}) for t in range(5)], dim=2)
    independent = torch.tensor([[False], [True], [False]])
    with torch.no_grad():
        one = video(x[:, :, :1], sigma, {"concat": concat[:, :, :1], "frames": independent})
        out = video(x, sigma, {"concat": concat, "frames": independent})
    assert torch.allclose(one, per_frame[:, :, :1], atol=1e-5)
    assert torch.allclose(out[1], per_frame[1], atol=1e-5)  # independent images: the image model frame by frame
    assert (out[[0, 2]] - per_frame[[0, 2]]).abs().amax() > 1e-2  # videos: frames attend to each other
    first = video(x[:1], sigma[:1], {"concat": concat[:1], "frames": independent[:1]})
    assert torch.allclose(first, out[:1], atol=1e-5)  # a sample does not depend on the others
    with pytest.raises(ValueError, match="max_frames"):
        video(torch.randn(1, 1, 9, 16, 16), sigma[:1], {"concat": torch.randn(1, 2, 9, 16, 16), "frames": independent[:1]})


def test_activation_checkpointing_recomputes_the_temporal_blocks():
    """Checkpointed blocks recompute during backward, after forward has reset the frame layout: the loss and every
    gradient (the temporal attention's included) equal those of the plain forward pass."""
    _, video = image_and_video_unets()
    video.train()
    x, concat, sigma = torch.randn(2, 1, 4, 16, 16), torch.randn(2, 2, 4, 16, 16), torch.tensor([2.0, 30.0])

    def loss_and_grads():
        loss = video(x, sigma, {"concat": concat}).square().mean()
        return loss, torch.autograd.grad(loss, list(video.parameters()))

    loss, grads = loss_and_grads()
    video.checkpoint = True
    loss_ckpt, grads_ckpt = loss_and_grads()
    assert torch.equal(loss, loss_ckpt)
    temporal = [i for i, (name, _) in enumerate(video.named_parameters()) if "relative_bias" in name]
    assert temporal and all(grads[i].abs().sum() > 0 for i in temporal)
    for g, g_ckpt in zip(grads, grads_ckpt):
        torch.testing.assert_close(g_ckpt, g, rtol=1e-5, atol=1e-6)


def test_temporal_attention_in_chunks_equals_one_call(monkeypatch):
    """Temporal attention splits its B·H·W sequences into chunks of at most MAX_ATTENTION_BATCH / heads (a CUDA
    kernel limit); the output and the gradients do not change."""
    _, video = image_and_video_unets()
    x, concat, sigma = torch.randn(2, 1, 3, 16, 16), torch.randn(2, 2, 3, 16, 16), torch.tensor([2.0, 30.0])

    def output_and_grads():
        out = video(x, sigma, {"concat": concat})
        return out, torch.autograd.grad(out.square().mean(), list(video.parameters()))

    out, grads = output_and_grads()
    monkeypatch.setattr(video_unet, "MAX_ATTENTION_BATCH", 7)  # 2 · 8² sequences, 1 head: 19 chunks
    chunked, grads_chunked = output_and_grads()
    torch.testing.assert_close(chunked, out, rtol=1e-5, atol=1e-6)
    for g, g_chunked in zip(grads, grads_chunked):
        torch.testing.assert_close(g_chunked, g, rtol=1e-5, atol=1e-6)


def test_frame_masks_of_the_three_tasks():
    assert frame_mask("prediction", 8, 3, 2).tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert frame_mask("interpolation", 8, 3, 2).tolist() == [1, 1, 1, 0, 0, 0, 1, 1]
    assert frame_mask("unconditional", 8, 3, 2).sum() == 0
    video = torch.rand(1, 8, 4, 4) * 2 - 1
    pair = FrameMask(past=3, future=2, probabilities={"interpolation": 1.0})
    known = pair({"image": video}, torch.Generator())["known_frames"]
    assert known.shape == (2, 8, 4, 4) and torch.equal(known[0, :3], video[0, :3]) and (known[0, 3:6] == 0).all()
    assert known[1, :, 0, 0].tolist() == [1, 1, 1, 0, 0, 0, 1, 1]
    assert pair({"image": video, "independent": torch.tensor(True)}, torch.Generator())["known_frames"].eq(0).all()
    drawn = {int(FrameMask(past=3, future=2)({"image": video}, torch.Generator().manual_seed(s))["known_frames"][1].sum())
             for s in range(30)}
    assert drawn == {0, 3 * 16, 5 * 16}  # all three tasks are drawn
    with pytest.raises(UserError, match="none to generate"):
        pair.check((1, 5, 4, 4))


def video_ddpm(**conditioner) -> DDPM:
    torch.manual_seed(0)
    network = dict(_target_="lit_diffusion.networks.VideoUNet", in_channels=1, image_size=8, base_channels=8,
                   channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4], num_groups=4, max_frames=6)
    model = DDPM(network, {"_target_": "lit_diffusion.processes.DiscreteVP", "num_timesteps": 100},
                 {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}, {"algorithm": "ddim", "steps": 4},
                 [1, 6, 8, 8], conditioner={"embedders": conditioner}, prediction="x0")
    for parameter in model.network.parameters():  # an untrained but not zero network: outputs differ from the data
        torch.nn.init.normal_(parameter, std=0.2)
    return model


@pytest.mark.parametrize("sampler", [{"algorithm": "ddim", "steps": 4}, {"algorithm": "ancestral", "steps": 4},
                                     {"algorithm": "dpm_solver", "steps": 4}])
def test_given_frames_are_unchanged_in_samples(sampler):
    model = video_ddpm(known_frames={"_target_": "lit_diffusion.conditioning.KnownFramesEmbedder", "channels": 1})
    videos = torch.rand(3, 1, 6, 8, 8) * 2 - 1
    masks = torch.stack([frame_mask(task, 6, 2, 2) for task in ("prediction", "interpolation", "unconditional")])
    known = known_frames(videos, masks)
    loss = model.batch_loss({"image": videos, "known_frames": known}, train=True)
    assert torch.isfinite(loss)
    samples = model.sample(3, sampler, seed=0, conditions={"known_frames": known}).images
    given = masks.bool()[:, None, :, None, None].expand_as(videos)
    assert torch.equal(samples[given], videos[given])
    assert (samples[~given] - videos[~given]).abs().mean() > 0.1  # the others are generated


def test_joint_training_flag_reaches_the_network():
    conditioner = Conditioner({"independent": IndependentFramesEmbedder(),
                               "known_frames": KnownFramesEmbedder(channels=1)}, image_size=8)
    assert conditioner.network_kwargs() == {"independent_frames": 1, "concat_channels": 2}
    model = video_ddpm(independent={"_target_": "lit_diffusion.conditioning.IndependentFramesEmbedder"})
    batch = {"image": torch.rand(2, 1, 6, 8, 8) * 2 - 1, "independent": torch.tensor([True, False])}
    assert torch.isfinite(model.batch_loss(batch, train=True))


def test_video_metrics_on_known_inputs():
    videos = torch.rand(4, 1, 6, 16, 16) * 2 - 1
    predicted = frame_mask("prediction", 6, 2, 2) == 0
    ssim, psnr = frame_scores(videos, videos, predicted)
    assert torch.allclose(ssim, torch.ones(4, dtype=ssim.dtype)) and torch.all(psnr == float("inf"))
    noisy = (videos + 0.3 * torch.randn_like(videos)).clamp(-1, 1)
    samples = torch.stack([noisy, videos, noisy.flip(0)], dim=1)  # the second of three samples is exact
    scores = best_of_n(samples, videos, predicted)
    assert scores["ssim_best"] == pytest.approx(1) and scores["psnr_best"] == float("inf") and scores["ssim_mean"] < 0.9
    worse = best_of_n(torch.stack([noisy, noisy.flip(0)], dim=1), videos, predicted)
    assert worse["ssim_best"] < 0.9 and np.isfinite(worse["psnr_best"])
    features = torch.randn(200, 8)
    assert frechet_distance(features, features) == pytest.approx(0, abs=1e-4)
    assert frechet_distance(features + 1, features) == pytest.approx(8, rel=1e-3)  # ‖Δμ‖² for a shift of 1 in 8 dims


TINY_VIDEO = ["network.base_channels=8", "network.channel_mult=[1,2]", "network.attention_resolutions=[8]",
              "data.image_size=16", "data.digit_size=8", "data.frames=6", "data.train_size=16", "data.val_size=8",
              "data.batch_size=4", "data.pairs.frame_mask.past=2", "data.pairs.frame_mask.future=2",
              "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
              "trainer.log_every_n_steps=1", "callbacks.model_checkpoint.every_n_train_steps=2",
              "callbacks.sample_grid.every_n_steps=2", "callbacks.sample_grid.num_samples=2", "sampler.steps=2"]


@pytest.mark.slow
def test_video_experiment_trains_samples_and_evaluates(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_DIFFUSION_CACHE", str(tmp_path / "cache"))  # the FD classifier's cache
    run_dir = tmp_path / "run"
    run_cli("lit_diffusion.run", "experiment=video_moving_mnist", *TINY_VIDEO, f"hydra.run.dir={run_dir}",
            cwd=tmp_path)
    assert (run_dir / "samples" / "final.gif").is_file() and (run_dir / "samples" / "step_0000002.gif").is_file()
    grid = iio.imread(run_dir / "samples" / "final.gif", index=None)
    assert grid.shape[0] == 6  # one GIF frame per video frame
    out = tmp_path / "eval"
    run_cli("lit_diffusion.evaluate", "task=video", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", "n=2",
            "task.samples=2", "task.classifier_steps=2", "extractor=random_conv", "batch_size=4", f"out={out}",
            f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    result = json.loads((out / "metrics.json").read_text())
    assert result["tasks"] == ["unconditional", "prediction", "interpolation"] and result["given_frames"] == {
        "past": 2, "future": 2}
    prediction = result["metrics"]["prediction"]
    assert prediction["samples_per_video"] == 2 and 0 < prediction["ssim_best"] <= 1 and "fd" in prediction
    assert {"frame_fid", "frame_kid_mean", "fd"} <= set(result["metrics"]["unconditional"])
    assert result["fd_features"]["training_steps"] == 2 and (out / "prediction.gif").is_file()
