"""Every CPU experiment trains a few steps through the real entry point on a tiny network and samples
with its default sampler (fewer steps); the likelihood entry scores a checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cli import run_cli, train_tiny

pytestmark = pytest.mark.slow
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# Per experiment: overrides that shrink its default sampler for a test.
EXPERIMENTS = {
    "ddpm_fashion_mnist": [],
    "ncsn_mnist": ["sampler.steps=3", "sampler.steps_each=2"],
    "ncsnv2_mnist": ["process.num_scales=5", "sampler.steps_each=2"],
    "sde_vp_mnist": ["sampler.steps=3"],
    "sde_subvp_mnist": ["sampler.steps=3"],
    "sde_ve_mnist": ["sampler.steps=3"],
    "edm_mnist": ["sampler.steps=3"],
    "cfg_mnist": ["callbacks.sample_grid.num_samples=10"],
}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_cpu_experiment_trains_and_samples(experiment, tmp_path):
    if experiment == "ddpm_fashion_mnist" and not FASHION_MNIST.is_dir():
        pytest.skip(f"Fashion-MNIST is not installed at {FASHION_MNIST} (apt-get install dataset-fashion-mnist)")
    run_dir = tmp_path / "run"
    proc = train_tiny(run_dir, f"experiment={experiment}", *EXPERIMENTS[experiment])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "samples" / "final.png").is_file(), proc.stdout
    out = tmp_path / "samples"
    run_cli("lit_diffusion.sample", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", "n=2", f"out={out}",
            f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert (out / "grid.png").is_file()


@pytest.mark.parametrize("sampler,extra", [("ode", ["sampler.rtol=1e-2", "sampler.atol=1e-2"]),
                                           ("pc", ["sampler.steps=3"]), ("euler_maruyama", ["sampler.steps=3"]),
                                           ("langevin", ["sampler.steps=3", "sampler.steps_each=2"])])
def test_score_samplers_run_on_a_ddpm_checkpoint(sampler, extra, tmp_path, ddpm_checkpoint):
    out = tmp_path / "s"
    proc = run_cli("lit_diffusion.sample", f"ckpt={ddpm_checkpoint}", "n=2", f"sampler={sampler}", *extra,
                   f"out={out}", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert (out / "grid.png").is_file() and "NFE per image" in proc.stdout


def test_likelihood_entry_reports_bits_per_dim(tmp_path, ddpm_checkpoint):
    out = tmp_path / "bpd.json"
    run_cli("lit_diffusion.likelihood", f"ckpt={ddpm_checkpoint}", "n=2", "batch_size=2", "rtol=1e-2", "atol=1e-2",
            f"out={out}", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    result = json.loads(out.read_text())
    assert result["n"] == 2 and result["dequantization"] == "uniform"
    assert 0 < result["bpd_mean"] < 20 and result["nfe_mean"] > 0


@pytest.fixture(scope="module")
def ddpm_checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ddpm") / "run"
    # ε: a barely trained x₀ network (the main job's target) is far from the identity as σ → 0, which makes the
    # probability-flow likelihood astronomically bad (≈ 6,000 bits/dim after 2 steps); ε starts near it
    train_tiny(run_dir, "trainer.max_steps=2", "callbacks.sample_grid.every_n_steps=0", "model.prediction=eps")
    return run_dir / "checkpoints" / "last.ckpt"


def test_classifier_guidance_two_stages(tmp_path, ddpm_checkpoint):
    """Stage 2 trains a noise-conditional classifier whose grids are the stage-1 model's guided samples; the
    sample entry then guides the diffusion checkpoint with the classifier checkpoint."""
    run_dir = tmp_path / "classifier"
    run_cli("lit_diffusion.run", "experiment=classifier_guidance_mnist", f"model.diffusion_checkpoint={ddpm_checkpoint}",
            "network.base_channels=8", "data.batch_size=8", "trainer.max_steps=2", "trainer.val_check_interval=2",
            "+trainer.limit_val_batches=2", "callbacks.sample_grid.num_samples=4", "sampler.steps=3",
            f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert (run_dir / "samples" / "final.png").is_file()
    assert "val/accuracy" in (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    out = tmp_path / "guided"
    proc = run_cli("lit_diffusion.sample", f"ckpt={ddpm_checkpoint}", f"classifier={run_dir / 'checkpoints' / 'last.ckpt'}",
                   "class_labels=[3]", "guidance_scale=2", "n=2", "sampler.steps=3", f"out={out}",
                   f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert (out / "grid.png").is_file(), proc.stdout
    # The stage-1 model is a frozen part of the classifier run: out of the raw-weights copy, stored once in the
    # EMA state; the classifier checkpoint loads (and draws its guided grid) without the stage-1 file.
    import shutil

    import torch

    from lit_diffusion.checkpoint import model_from_checkpoint

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    frozen = [k for k in ckpt["state_dict"] if k.startswith("diffusion.")]
    assert frozen and not any(k.startswith("diffusion.") for k in ckpt["current_model_state"])
    assert len(ckpt["hyper_parameters"]["diffusion"]["sha256"]) == 64
    moved = tmp_path / "moved.ckpt"
    shutil.move(ddpm_checkpoint, moved)
    try:
        for weights in ("ema", "raw"):
            classifier = model_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights)
            torch.testing.assert_close(classifier.state_dict()[frozen[0]], ckpt["state_dict"][frozen[0]])
        assert classifier.sample(2, {"algorithm": "ddim", "steps": 2}).images.shape == (2, 1, 28, 28)
    finally:
        shutil.move(moved, ddpm_checkpoint)


def test_guided_evaluation_records_guider_scale_and_labels(tmp_path):
    """``evaluate`` takes the sample entry's guidance keys and writes them to the JSON and CSV."""
    run_dir = tmp_path / "cfg"
    train_tiny(run_dir, "experiment=cfg_mnist", "trainer.max_steps=2", "callbacks.sample_grid.every_n_steps=0",
               "callbacks.sample_grid.num_samples=10")
    results = tmp_path / "results.csv"
    run_cli("lit_diffusion.evaluate", f"ckpt={run_dir}/checkpoints/last.ckpt", "extractor=random_conv", "n=10",
            "ref_n=32", "metrics=[fid]", "sampler.steps=2", "class_labels=[0,1,2,3,4,5,6,7,8,9]", "guidance_scale=3",
            f"out={tmp_path}/r.json", f"csv={results}", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["guider"] == "cfg" and result["guidance_scale"] == 3.0
    assert result["class_labels"] == list(range(10)) and result["nfe"] == 2
    row = next(csv.DictReader(open(results)))
    assert row["guider"] == "cfg" and float(row["guidance_scale"]) == 3.0


def test_guidance_errors_are_one_message(tmp_path, ddpm_checkpoint):
    proc = run_cli("lit_diffusion.sample", f"ckpt={ddpm_checkpoint}", "class_labels=[3]", "guidance_scale=2", "n=2",
                   f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "no class embedder" in proc.stderr + proc.stdout  # checked before any sampling
    assert "Traceback" not in proc.stderr
    proc = run_cli("lit_diffusion.run", "experiment=classifier_guidance_mnist", f"hydra.run.dir={tmp_path / 'r'}",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "model.diffusion_checkpoint" in proc.stderr + proc.stdout
