"""Resuming is exact: from periodic checkpoints, from the end-of-fit last.ckpt ("train longer"), after kill -9,
with ``ckpt_path=auto``; and checkpoint files are never seen half written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning
import pytest
import torch

from cli import TINY, train_tiny
from items import Items
from lit_diffusion.callbacks import ResumableCheckpoint
from lit_diffusion.resume import AtomicCheckpointIO, reopen_cut_epoch

STEPS = 8
QUIET = ["callbacks.sample_grid.every_n_steps=0", "logger=none"]  # the final grid is still drawn


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a: Path, b: Path) -> None:
    """Raw and EMA weights of two checkpoints are bit for bit equal."""
    a, b = load(a), load(b)
    assert a["global_step"] == b["global_step"]
    for key in ("state_dict", "current_model_state"):  # EMA and raw weights
        assert a[key].keys() == b[key].keys()
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}/{name} differs after resume"


def loader_state(path: Path) -> dict:
    return load(path)["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted run of STEPS steps; ``ckpt_path=auto`` in a new folder starts it fresh."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    proc = train_tiny(run_dir, f"trainer.max_steps={STEPS}", "ckpt_path=auto", *QUIET)
    assert "starting a new run" in proc.stdout + proc.stderr
    return run_dir / "checkpoints"


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_train_longer_from_the_end_of_fit_checkpoint(straight, tmp_path):
    """3 steps (checkpoints every 2), then ``ckpt_path=<its last.ckpt> max_steps=6``: the same weights as 6 steps.

    last.ckpt holds the final step 3 (Lightning would leave it at step 2), inside epoch 0, and the resumed run
    continues epoch 0 where it stopped (Lightning would count the epoch as complete and start epoch 1)."""
    run_dir = tmp_path / "run"
    train_tiny(run_dir, "trainer.max_steps=3", *QUIET)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert load(last)["global_step"] == 3 and load(last)["epoch"] == 0
    assert loader_state(last) == {"epoch": 0, "batches_done": 3}
    longer = tmp_path / "longer"
    train_tiny(longer, f"trainer.max_steps={STEPS}", f"ckpt_path={last}", *QUIET)
    assert loader_state(longer / "checkpoints" / "last.ckpt") == {"epoch": 0, "batches_done": STEPS}
    assert_same_weights(straight / "last.ckpt", longer / "checkpoints" / "last.ckpt")


def kill_at(run_dir: Path, step: int, delay: float) -> None:
    """Start a run with a checkpoint every step and kill -9 it ``delay`` s after step ``step``'s checkpoint
    appears (then it is writing last.ckpt, or already in the next step)."""
    run_dir.mkdir(parents=True)
    overrides = [*TINY, f"hydra.run.dir={run_dir}", f"trainer.max_steps={STEPS}", "ckpt_path=auto", *QUIET,
                 "callbacks.model_checkpoint.every_n_train_steps=1"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    log = run_dir.parent / "killed.log"
    with open(log, "wb") as output:
        proc = subprocess.Popen([sys.executable, "-m", "lit_diffusion.run", *overrides], cwd=run_dir.parent, env=env,
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    marker = run_dir / "checkpoints" / f"step_{step:07d}.ckpt"
    deadline = time.monotonic() + 300
    try:
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the run ended before step {step}: {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no checkpoint of step {step} after 300 s")
            time.sleep(0.01)
        time.sleep(delay)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize(("step", "delay"), [(2, 0.0), (3, 0.02), (4, 0.0), (5, 0.01), (6, 0.005)])
def test_resume_is_bit_exact(straight, tmp_path, step, delay):
    """kill -9 during a run (at 5 different steps), then the same command again (``ckpt_path=auto``, same run folder): it resumes
    from the last periodic (mid-epoch) checkpoint, and the final raw and EMA weights equal the uninterrupted
    run's.  The kill comes right after step ``step``'s checkpoint file, often while last.ckpt is written."""
    run_dir = tmp_path / "run"
    kill_at(run_dir, step, delay)
    resumed_from = load(run_dir / "checkpoints" / "last.ckpt")["global_step"]  # never a half-written file
    assert step - 1 <= resumed_from < STEPS
    proc = train_tiny(run_dir, f"trainer.max_steps={STEPS}", "ckpt_path=auto", *QUIET,
                      "callbacks.model_checkpoint.every_n_train_steps=1")
    assert "resuming from" in proc.stdout + proc.stderr
    last = run_dir / "checkpoints" / "last.ckpt"
    assert_same_weights(straight / "last.ckpt", last)
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))  # the killed write's temporary file is gone


def test_auto_resume_needs_the_run_folder(tmp_path):
    """``ckpt_path=auto`` resolves to ``<checkpoint dir>/last.ckpt`` only when that file exists."""
    from omegaconf import OmegaConf

    from lit_diffusion.resume import resolve_ckpt_path

    cfg = OmegaConf.create({"ckpt_path": "auto", "paths": {"output_dir": str(tmp_path)},
                            "callbacks": {"model_checkpoint": {"dirpath": str(tmp_path / "ckpts")}}})
    assert resolve_ckpt_path(cfg) is None
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "ckpts" / "last.ckpt").write_bytes(b"")
    assert resolve_ckpt_path(cfg) == str(tmp_path / "ckpts" / "last.ckpt")
    cfg.callbacks = None  # no checkpoint callback: the default folder
    assert resolve_ckpt_path(cfg) is None
    assert resolve_ckpt_path(OmegaConf.create({"ckpt_path": "x.ckpt"})) == "x.ckpt"
    assert resolve_ckpt_path(OmegaConf.create({"ckpt_path": None})) is None


# ------------------------------------------------------------------------------- end of fit, in process


class Recorder(lightning.LightningModule):
    """Records the labels of each training batch; learns nothing."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.labels: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.labels.append(batch["label"].tolist())
        return self.weight * batch["image"].mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(tmp_path: Path, max_steps: int, checkpoint, ckpt_path=None) -> list[list[int]]:
    module = Recorder()
    lightning.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, callbacks=[checkpoint],
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                      ).fit(module, Items(n=16, batch_size=2, seed=3, random_flip=True), ckpt_path=ckpt_path)
    return module.labels


@pytest.mark.filterwarnings("ignore:.*val_dataloader")
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")
@pytest.mark.parametrize("writer", ["lightning", "ours"])
def test_end_of_fit_checkpoint_resumes_inside_its_epoch(tmp_path, writer):
    """3 steps of an 8-batch epoch, then to 11 steps: the batches of an uninterrupted 11-step run.

    Lightning's own ModelCheckpoint writes last.ckpt after closing the epoch (epoch 1 in the file): loaded
    by ResumableCheckpoint it is reopened.  Ours writes it at step 3 inside epoch 0."""
    uninterrupted = fit(tmp_path / "a", 11, ResumableCheckpoint(dirpath=tmp_path / "a", save_last=True))
    cls = lightning.pytorch.callbacks.ModelCheckpoint if writer == "lightning" else ResumableCheckpoint
    fit(tmp_path / "b", 3, cls(dirpath=tmp_path / "b", save_last=True, every_n_train_steps=1000))
    checkpoint = load(tmp_path / "b" / "last.ckpt")
    assert checkpoint["global_step"] == 3 and checkpoint["epoch"] == (1 if writer == "lightning" else 0)
    assert reopen_cut_epoch(checkpoint) == (writer == "lightning")
    resumed = fit(tmp_path / "c", 11, ResumableCheckpoint(dirpath=tmp_path / "c", save_last=True),
                  ckpt_path=tmp_path / "b" / "last.ckpt")
    assert len(uninterrupted) == 11 and resumed == uninterrupted[3:]


# ---------------------------------------------------------------------------------------- atomic writes


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """While a checkpoint is being written its old version stays complete; an interrupted write leaves it."""
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1), "w": torch.randn(1000)}, path)
    first = load(path)
    real_save = torch.save
    seen_mid_write = []

    def watched_save(obj, file):
        real_save(obj, file)
        seen_mid_write.append(load(path)["step"].item())  # the target, after the new bytes are written
        file.flush()

    monkeypatch.setattr(torch, "save", watched_save)
    io.save_checkpoint({"step": torch.tensor(2), "w": torch.randn(1000)}, path)
    assert seen_mid_write == [1] and load(path)["step"].item() == 2

    def interrupted_save(obj, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # Ctrl-C, a signal, a full disk, a dying node …

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": torch.tensor(3)}, path)
    assert load(path)["step"].item() == 2 and not list(path.parent.glob(".*.tmp"))
    monkeypatch.setattr(torch, "save", real_save)
    (path.parent / ".last.ckpt.999999.tmp").write_bytes(b"left by a kill -9")
    io.save_checkpoint(first, path)
    assert torch.equal(load(path)["w"], first["w"]) and not list(path.parent.glob(".*.tmp"))


def test_the_trainer_writes_checkpoints_atomically():
    """The default trainer config installs AtomicCheckpointIO."""
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=["trainer=ddp_cpu", "paths.output_dir=unused"])
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
