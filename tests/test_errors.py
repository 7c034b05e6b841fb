"""User mistakes give one clear message, a non-zero exit and no traceback."""

from __future__ import annotations

import pytest
import torch

from cli import run_cli, train_tiny

pytestmark = pytest.mark.slow


def assert_clean_failure(proc, *fragments):
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in text, text


def test_unknown_experiment(tmp_path):
    proc = run_cli("lit_diffusion.run", "experiment=ddpm_nowhere", cwd=tmp_path, check=False)
    assert_clean_failure(proc, "experiment/ddpm_nowhere", "ddpm_mnist")


def test_unknown_config_key(tmp_path):
    proc = run_cli("lit_diffusion.run", "trainer.max_stepz=3", cwd=tmp_path, check=False)
    assert_clean_failure(proc, "max_stepz")


def test_missing_checkpoint(tmp_path):
    proc = train_tiny(tmp_path / "run", f"ckpt_path={tmp_path / 'nope.ckpt'}", check=False)
    assert proc.returncode == 2
    assert_clean_failure(proc, "does not exist", "nope.ckpt")


def test_foreign_and_corrupt_checkpoints(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x80\x04not a checkpoint at all")
    for path, message in ((foreign, "not a lit_diffusion checkpoint"), (corrupt, "not a readable checkpoint")):
        proc = run_cli("lit_diffusion.sample", f"ckpt={path}", f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False)
        assert proc.returncode == 2
        assert_clean_failure(proc, message)


def test_missing_dataset(tmp_path):
    proc = train_tiny(tmp_path / "run", "data=cifar10", f"data.root={tmp_path / 'no_cifar'}", check=False)
    assert proc.returncode == 2
    assert_clean_failure(proc, "CIFAR-10", str(tmp_path / "no_cifar"))


def test_nan_loss_stops_with_message_and_keeps_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    proc = train_tiny(run_dir, "model.optimizer.lr=1e30", "trainer.gradient_clip_val=null", "trainer.max_steps=20",
                      "callbacks.model_checkpoint.every_n_train_steps=1", "trainer.val_check_interval=20", check=False)
    assert proc.returncode == 2
    assert_clean_failure(proc, "training loss became", "model.optimizer.lr")
    assert list((run_dir / "checkpoints").glob("step_*.ckpt"))
