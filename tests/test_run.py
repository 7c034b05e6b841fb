"""End to end through the real Hydra entry points, on a tiny network and the bundled MNIST digits."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from cli import TINY, run_cli, train_tiny
from lit_diffusion.checkpoint import model_from_checkpoint
from lit_diffusion.models import DDPM

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("e2e") / "run"
    proc = train_tiny(run_dir, "+callbacks@callbacks.throughput=throughput", "callbacks.throughput.window_size=2")
    return run_dir, proc


def test_training_writes_checkpoints_grids_and_metrics(trained):
    run_dir, proc = trained
    ckpts = run_dir / "checkpoints"
    assert (ckpts / "last.ckpt").is_file()
    assert (ckpts / "step_0000002.ckpt").is_file() and (ckpts / "step_0000004.ckpt").is_file()
    assert (run_dir / "samples" / "step_0000002.png").is_file()
    assert (run_dir / "samples" / "final.png").is_file()
    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    assert any(r.get("val/loss") for r in rows)
    assert "last sample grid" in proc.stdout
    samples = [int(r["train/samples"]) for r in rows if r.get("train/samples")]  # ThroughputMonitor, batch_size()
    assert samples == [8, 16, 24, 32] and sum(bool(r.get("train/device/samples_per_sec")) for r in rows) >= 2


def test_checkpoint_is_safe_and_self_contained(trained):
    run_dir, _ = trained
    path = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code needed
    assert ckpt["global_step"] == 4
    assert set(ckpt["state_dict"]) == set(ckpt["current_model_state"])  # EMA and raw weights
    assert ckpt["lit_diffusion"]["config"]["name"] == "ddpm_mnist"
    assert ckpt["lit_diffusion"]["config"]["trainer"]["max_steps"] == 4
    ema = DDPM.load_from_checkpoint(path, map_location="cpu")
    raw = model_from_checkpoint(path, weights="raw")
    name = "network.out_conv.weight" if "network.out_conv.weight" in ckpt["state_dict"] else next(iter(ckpt["state_dict"]))
    torch.testing.assert_close(ema.state_dict()[name], ckpt["state_dict"][name])
    torch.testing.assert_close(raw.state_dict()[name], ckpt["current_model_state"][name])
    assert not all(torch.equal(ckpt["state_dict"][k], ckpt["current_model_state"][k]) for k in ckpt["state_dict"])


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_sample_entry_writes_grid_and_images(trained, sampler, tmp_path):
    run_dir, _ = trained
    out = tmp_path / "samples"
    proc = run_cli("lit_diffusion.sample", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", "n=5",
                   f"sampler={sampler}", "sampler.steps=4", "seed=1", f"out={out}", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert (out / "grid.png").is_file()
    assert sorted(p.name for p in out.glob("0*.png")) == [f"{i:06d}.png" for i in range(5)]
    assert "NFE per image 4" in proc.stdout


def test_sample_and_evaluate_do_not_depend_on_the_batch_size(trained, tmp_path, monkeypatch):
    """Image i depends only on (seed, i): batch_size=6 and batch_size=2 write identical files and scores."""
    monkeypatch.setenv("LIT_DIFFUSION_CACHE", str(tmp_path / "cache"))
    run_dir, _ = trained
    ckpt = f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}"
    files, scores = {}, {}
    for batch in (6, 2):
        out = tmp_path / f"b{batch}"
        run_cli("lit_diffusion.sample", ckpt, "n=6", f"batch_size={batch}", "sampler=ddim", "sampler.steps=3", "sampler.eta=1.0",
                f"out={out}", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
        files[batch] = [p.read_bytes() for p in sorted(out.glob("0*.png"))]
        run_cli("lit_diffusion.evaluate", ckpt, "extractor=random_conv", "n=6", f"batch_size={batch}", "ref_n=16",
                "metrics=[fid,kid]", "kid_subset_size=6", "sampler.steps=3", f"out={tmp_path}/e{batch}.json",
                "csv=null", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
        scores[batch] = json.loads((tmp_path / f"e{batch}.json").read_text())["summary"]
    assert len(files[6]) == 6 and files[6] == files[2]
    assert scores[6] == scores[2]


def test_sample_entry_npz_raw_weights_and_checkpoint_sampler(trained, tmp_path):
    run_dir, _ = trained
    out = tmp_path / "npz"
    run_cli("lit_diffusion.sample", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", "n=3", "format=npz",
            "weights=raw", "sampler.steps=2", f"out={out}", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    import numpy as np

    images = np.load(out / "samples.npz")["images"]
    assert images.shape == (3, 28, 28, 1) and images.dtype == np.uint8


def test_multirun_sweeps(tmp_path):
    proc = run_cli("lit_diffusion.run", "-m", *TINY, "trainer.max_steps=1", "callbacks.sample_grid.every_n_steps=0",
                   "model.optimizer.lr=1e-3,2e-3", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    for job in ("0", "1"):
        assert (tmp_path / "sweep" / job / "checkpoints" / "last.ckpt").is_file(), proc.stdout


@pytest.mark.parametrize("logger", ["tensorboard", "none"])  # W&B: tests/test_dashboard.py
def test_loggers(logger, tmp_path):
    run_dir = tmp_path / "run"
    train_tiny(run_dir, f"logger={logger}", "trainer.max_steps=2")
    if logger == "none":  # no logger, so no learning-rate monitor either; checkpoints as usual
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    else:
        assert list((run_dir / "tensorboard").rglob("events.out.tfevents*"))
