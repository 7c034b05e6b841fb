"""Data-parallel training: the sharded epoch order, per-rank randomness, and real 2-process CPU runs (gloo).

The end-to-end tests run ``python -m lit_diffusion.run trainer=ddp_cpu`` (2 processes) on a folder of 40
tiny PNGs (32 train, 8 validation; 4 images per process and step, so an epoch is 4 steps) and check what a
one-process run with batches of 8 predicts: the same images per step, the same weights within float
tolerance, the validation loss averaged over both processes, and an exact continuation after kill -9.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler, default_collate

from cli import TINY
from items import Items
from lit_diffusion.autoencoders.networks import build_autoencoder, latent_from_moments
from lit_diffusion.datamodules import EpochShuffleSampler, ImageDataModule, ImageFolderDataModule
from lit_diffusion.models.base import DiffusionModule, step_seed

TESTS = Path(__file__).parent


def as_rank(datamodule: ImageDataModule, world: int, rank: int) -> ImageDataModule:
    """The DataModule as process ``rank`` of ``world`` sees it (Lightning's ``distributed_sampler_kwargs``)."""
    datamodule.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": world, "rank": rank})
    return datamodule


def batches(loader, epoch: int) -> list[dict]:
    loader.sampler.set_epoch(epoch)
    return list(loader)


# ------------------------------------------------------------------------------------------ the sampler


def test_one_process_order_is_the_old_one():
    """One process: the permutation of (seed + epoch), views from the same generator, as before sharding."""
    sampler = EpochShuffleSampler(20, seed=3, num_views=2)
    sampler.set_epoch(4)
    generator = torch.Generator().manual_seed(3 + 4)
    order = torch.randperm(20, generator=generator)
    order += 20 * torch.randint(2, (20,), generator=generator)
    assert list(sampler) == order.tolist() and len(sampler) == 20


@pytest.mark.parametrize("num_items", [24, 25, 23])
@pytest.mark.parametrize("world", [2, 3])
def test_shards_partition_the_epoch(num_items, world):
    """Disjoint parts, ⌊N / R⌋ items each, together the epoch's order cut to a multiple of R; rank r takes
    positions r, r + R, r + 2R, …"""
    shards = []
    for rank in range(world):
        sampler = EpochShuffleSampler(num_items, seed=1, num_views=2, num_replicas=world, rank=rank)
        sampler.set_epoch(2)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler) == num_items // world
    order = sampler.order().tolist()
    kept = num_items // world * world
    assert sorted(sum(shards, [])) == sorted(order[:kept])
    assert [order[position] for position in range(kept)] == [shards[p % world][p // world] for p in range(kept)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_two_processes_see_the_batches_of_one_process_with_twice_the_batch(num_workers):
    """Step k of rank r is rows r, r + 2, … of one process's step k with batches of 6 (images, flips and
    labels); one epoch of both ranks is every item once.  Loader workers change nothing."""
    one = Items(batch_size=6, seed=2, random_flip=True).train_dataloader()
    ranks = [as_rank(Items(batch_size=3, seed=2, random_flip=True, num_workers=num_workers), 2, r).train_dataloader()
             for r in range(2)]
    for epoch in (0, 1):
        expected, got = batches(one, epoch), [batches(loader, epoch) for loader in ranks]
        assert len(expected) == len(got[0]) == len(got[1]) == 4
        for step, batch in enumerate(expected):
            for rank in range(2):
                for key in ("image", "label"):
                    assert torch.equal(got[rank][step][key], batch[key][rank::2])
        labels = torch.cat([b["label"] for rank in got for b in rank]).tolist()
        assert sorted(labels) == list(range(24))


def test_mid_epoch_resume_of_sharded_loaders():
    """Each rank continues after the batches it had; the state also resumes on one process with batches of
    2 × 3, at the same place of the epoch's order."""
    def rank_loader(rank, world=2, batch_size=3):
        return as_rank(Items(batch_size=batch_size, seed=2, random_flip=True), world, rank).train_dataloader()

    states, rests = [], []
    for rank in range(2):
        loader = rank_loader(rank)
        loader.sampler.set_epoch(1)
        iterator = iter(loader)
        next(iterator), next(iterator)
        states.append(loader.state_dict())
        rests.append(list(iterator))
    assert states[0] == states[1] == {"epoch": 1, "batches_done": 2, "items_done": 12}
    for rank in range(2):
        resumed = rank_loader(rank)
        resumed.load_state_dict(states[0])
        resumed.sampler.set_epoch(1)
        rest = list(resumed)
        assert len(rest) == 2 and all(torch.equal(a["image"], b["image"]) for a, b in zip(rests[rank], rest))
        assert resumed.state_dict()["batches_done"] == 4
    one = rank_loader(0, world=1, batch_size=6)
    full = batches(one, 1)
    one.load_state_dict(states[0])
    one.sampler.set_epoch(1)
    assert [b["label"].tolist() for b in one] == [b["label"].tolist() for b in full[2:]]


def test_lightning_leaves_the_sampler_alone():
    """Under DDP Lightning wraps a plain custom sampler (its wrapper has no ``start``: the crash this fixes);
    EpochShuffleSampler is a DistributedSampler that already shards, so the loader stays as it is."""
    from lightning.pytorch.trainer.states import RunningStage

    trainer = lightning.Trainer(strategy="ddp", accelerator="cpu", devices=2, logger=False, enable_progress_bar=False,
                                enable_model_summary=False)
    loader = Items(batch_size=3).train_dataloader()
    assert isinstance(loader.sampler, DistributedSampler)
    assert trainer._data_connector._prepare_dataloader(loader, shuffle=True, mode=RunningStage.TRAINING) is loader


def test_per_rank_seeds_are_distinct_and_reproducible():
    """Rank 0 keeps the one-process seed of (seed, step); other ranks differ in the 32 bits torch's CPU
    generator reads, so their noise differs."""
    assert step_seed(7, 11) == step_seed(7, 11, 0) == 7 * 1_000_003 + 11
    seeds = {step_seed(7, step, rank) % 2**32 for rank in range(8) for step in (11, 12)}
    assert len(seeds) == 16
    noise = [torch.randn(4, generator=torch.Generator().manual_seed(step_seed(7, 11, rank))) for rank in (0, 1, 1)]
    assert not torch.equal(noise[0], noise[1]) and torch.equal(noise[1], noise[2])


# ------------------------------------------------------------------------------------ 2-process CPU runs


class BatchRecorder(lightning.Callback):
    """Saves the images of every training batch of this process to ``<path>/rank<r>.pt`` as {step: images}."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.images: dict[int, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images[trainer.global_step] = batch["image"].clone()
        self.path.mkdir(parents=True, exist_ok=True)
        torch.save(self.images, self.path / f"rank{trainer.global_rank}.pt")


STEPS = 6
DATA = ["data=image_folder", "data.image_size=16", "data.channels=1", "data.batch_size=4", "data.val_fraction=0.2"]
DDP = [*TINY, *DATA, "trainer=ddp_cpu", f"trainer.max_steps={STEPS}", "callbacks.sample_grid.every_n_steps=0",
       "callbacks.model_checkpoint.every_n_train_steps=1", "ckpt_path=auto"]


def write_pngs(root: Path, n: int = 40) -> Path:
    root.mkdir(parents=True)
    images = np.random.default_rng(1).integers(0, 256, (n, 16, 16), dtype=np.uint8)
    for i, image in enumerate(images):
        Image.fromarray(image).save(root / f"{i:03d}.png")
    return root


def ddp_command(run_dir: Path, images: Path, *overrides: str) -> tuple[list[str], dict]:
    path = [str(TESTS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]  # ranks import BatchRecorder
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": os.pathsep.join(path)}
    command = [sys.executable, "-m", "lit_diffusion.run", *DDP, f"data.root={images}", f"hydra.run.dir={run_dir}",
               f"+callbacks.recorder._target_={__name__}.BatchRecorder",
               f"+callbacks.recorder.path={run_dir / 'batches'}",
               *overrides]
    return command, env


def run_ddp(run_dir: Path, images: Path, *overrides: str) -> subprocess.CompletedProcess:
    run_dir.mkdir(parents=True, exist_ok=True)
    command, env = ddp_command(run_dir, images, *overrides)
    proc = subprocess.run(command, cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"DDP run exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def csv_column(run_dir: Path, key: str) -> list[float]:
    rows = csv.DictReader(open(run_dir / "csv" / "metrics.csv"))
    return [float(row[key]) for row in rows if row.get(key)]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> SimpleNamespace:
    """One uninterrupted 2-process run of 6 steps (1.5 epochs), a checkpoint every step."""
    root = tmp_path_factory.mktemp("ddp")
    images = write_pngs(root / "images")
    run_dir = root / "run"
    proc = run_ddp(run_dir, images)
    return SimpleNamespace(run_dir=run_dir, images=images, proc=proc, checkpoints=run_dir / "checkpoints")


def image_folder(images: Path, batch_size: int, world: int = 1, rank: int = 0) -> ImageFolderDataModule:
    datamodule = ImageFolderDataModule(root=str(images), image_size=16, channels=1, batch_size=batch_size,
                                       val_fraction=0.2, seed=0)
    return as_rank(datamodule, world, rank) if world > 1 else datamodule


@pytest.mark.slow
def test_ddp_run_trains_and_checkpoints(ddp):
    assert "starting a new run" in ddp.proc.stdout + ddp.proc.stderr
    last = load(ddp.checkpoints / "last.ckpt")
    assert last["global_step"] == STEPS
    loader = last["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader == {"epoch": 1, "batches_done": 2, "items_done": 16}  # 4 steps an epoch, 8 images a step
    steps = sorted(p.name for p in ddp.checkpoints.glob("step_*.ckpt"))
    assert steps == [f"step_{k:07d}.ckpt" for k in range(1, STEPS + 1)]
    losses = csv_column(ddp.run_dir, "train/loss")
    assert len(losses) == STEPS and all(np.isfinite(losses))
    assert (ddp.run_dir / "samples" / "final.png").is_file()


@pytest.mark.slow
def test_ddp_ranks_split_each_epoch(ddp):
    """Rank r's batch of step k is rows r, r + 2, … of one process's batch k of 8; the first epoch (steps
    1–4) of both ranks holds every training image once (as itself or mirrored)."""
    seen = [load(ddp.run_dir / "batches" / f"rank{r}.pt") for r in range(2)]
    assert sorted(seen[0]) == sorted(seen[1]) == list(range(1, STEPS + 1))
    one = image_folder(ddp.images, batch_size=8).train_dataloader()
    expected = batches(one, 0) + batches(one, 1)
    for step in range(1, STEPS + 1):
        for rank in range(2):
            assert torch.equal(seen[rank][step], expected[step - 1]["image"][rank::2])
    epoch = torch.cat([seen[rank][step] for rank in range(2) for step in range(1, 5)])
    train = torch.stack([one.dataset[i]["image"] for i in range(len(one.dataset) // 2)])  # view 0: unflipped
    matches = [[torch.equal(x, t) or torch.equal(x, t.flip(-1)) for t in train] for x in epoch]
    assert len(epoch) == len(train) == 32 and sorted(row.index(True) for row in matches) == list(range(32))


@pytest.mark.slow
def test_ddp_validation_loss_is_the_mean_over_ranks(ddp):
    """val/loss after step 6 equals the mean of both ranks' losses on their halves of the validation set
    (Lightning's DistributedSampler: rank r gets items r, r + 2, …), recomputed from that step's EMA weights
    with the fixed validation noise, to float32 rounding; rank 0's own loss is 20 times further off."""
    from lit_diffusion.checkpoint import model_from_checkpoint

    model = model_from_checkpoint(ddp.checkpoints / f"step_{STEPS:07d}.ckpt", weights="ema")
    datamodule = image_folder(ddp.images, batch_size=4)
    datamodule.setup()
    per_rank = []
    for rank in range(2):
        batch = default_collate([datamodule.val_set[i] for i in range(rank, len(datamodule.val_set), 2)][:4])
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(0)  # validation noise of batch 0
            per_rank.append(model.batch_loss(batch, train=False).item())
    logged = csv_column(ddp.run_dir, "val/loss")[-1]
    assert len(csv_column(ddp.run_dir, "val/loss")) == STEPS // 2  # after steps 2, 4, 6
    assert logged == pytest.approx(sum(per_rank) / 2, abs=3e-7)
    assert abs(logged - per_rank[0]) > 6e-6


@pytest.mark.slow
def test_two_processes_match_one_process_with_twice_the_batch(ddp, tmp_path, monkeypatch):
    """The 2-process run against one process with batches of 8, step by step, raw and EMA weights.

    Each rank draws its noise from the seed of (seed, step, rank), so the 2-process loss is the mean of the
    model's loss on rows 0, 2, … drawn with rank 0's seed and on rows 1, 3, … drawn with rank 1's.  The
    one-process run computes exactly that (its ``loss`` is patched to do so); everything else — data, Adam,
    gradient clipping of the averaged gradient, EMA, learning-rate warm-up — is the ordinary one-process
    path.  So the weights must agree up to float rounding (gloo's gradient average vs autograd's), and rank
    0's logged loss must equal the one-process run's rank-0 half."""
    from hydra import compose, initialize_config_module

    from lit_diffusion.run import train

    halves: list[list[float]] = []
    real_loss = DiffusionModule.loss

    def loss_as_two_processes(self, x0, cond=None):
        if not self.training:  # validation
            return real_loss(self, x0, cond)
        parts = []
        for rank in range(2):
            torch.manual_seed(step_seed(self.hparams.seed, self.global_step, rank))
            part_cond = {key: value[rank::2] for key, value in cond.items()} if cond else cond
            parts.append(real_loss(self, x0[rank::2], part_cond))
        halves.append([part.item() for part in parts])
        return torch.stack(parts).mean()

    monkeypatch.setattr(DiffusionModule, "loss", loss_as_two_processes)
    overrides = [o for o in DDP if not o.startswith(("trainer=", "data.batch_size", "ckpt_path"))]
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "data.batch_size=8", f"data.root={ddp.images}",
                                           f"paths.output_dir={tmp_path}", "logger=none"])
    torch.set_flush_denormal(True)  # as the entry point does
    try:
        train(cfg)
    finally:
        torch.set_flush_denormal(False)

    assert len(halves) == STEPS
    logged = csv_column(ddp.run_dir, "train/loss")  # rank 0's own loss
    np.testing.assert_allclose(logged, [h[0] for h in halves], rtol=1e-5)
    worst = 0.0
    for step in range(1, STEPS + 1):
        a = load(ddp.checkpoints / f"step_{step:07d}.ckpt")
        b = load(tmp_path / "checkpoints" / f"step_{step:07d}.ckpt")
        for key in ("current_model_state", "state_dict"):  # raw and EMA weights
            for name, tensor in a[key].items():
                if tensor.is_floating_point():
                    torch.testing.assert_close(tensor, b[key][name], rtol=1e-4, atol=1e-6)
                    worst = max(worst, (tensor - b[key][name]).abs().max().item())
    gap = max(abs(a - b[0]) for a, b in zip(logged, halves))
    print(f"\nlargest weight difference over {STEPS} steps (raw and EMA): {worst:.3g}; largest rank-0 loss "
          f"difference: {gap:.3g}; losses per step (rank 0, rank 1, one-process mean): "
          f"{[(round(a, 5), round(b, 5), round((a + b) / 2, 5)) for a, b in halves]}")


@pytest.mark.slow
def test_ddp_kill_9_and_auto_resume_is_exact(ddp, tmp_path):
    """kill -9 of both processes after step 3's checkpoint, the same command again (``ckpt_path=auto``):
    every later batch of each rank and the final raw and EMA weights equal the uninterrupted run's."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    command, env = ddp_command(run_dir, ddp.images)
    log = tmp_path / "killed.log"
    with open(log, "wb") as output:
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)
    marker, deadline = run_dir / "checkpoints" / "step_0000003.ckpt", time.monotonic() + 300
    try:
        while not marker.exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint of step 3 after 300 s"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # both ranks, as a preempted job
        proc.wait()
    resumed_from = load(run_dir / "checkpoints" / "last.ckpt")["global_step"]
    assert 2 <= resumed_from < STEPS
    before = [load(run_dir / "batches" / f"rank{r}.pt") for r in range(2)]
    resumed = run_ddp(run_dir, ddp.images)
    assert "resuming from" in resumed.stdout + resumed.stderr
    straight = [load(ddp.run_dir / "batches" / f"rank{r}.pt") for r in range(2)]
    for rank in range(2):
        after = load(run_dir / "batches" / f"rank{rank}.pt")  # the resumed process's batches
        assert sorted(after) == list(range(resumed_from + 1, STEPS + 1))
        assert set(before[rank]) >= set(range(1, resumed_from + 1))
        assert all(torch.equal(after[step], straight[rank][step]) for step in after)
    a, b = load(ddp.checkpoints / "last.ckpt"), load(run_dir / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == STEPS
    for key in ("state_dict", "current_model_state"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}/{name} differs after resume"


class ScaleRecorder(lightning.Callback):
    """Each rank's latent scale factor after its first step, and 1/std of its own first batch's latents (of a
    posterior sample, as the fit, and of the posterior means, which differ between ranks only by their data)."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.local: dict | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.local is None:  # before the module's hook fits the factor
            moments = pl_module.first_stage.module.moments(batch["image"])
            self.local = {kind: float(1 / latent_from_moments("kl", moments, sample=kind == "sample").std())
                          for kind in ("sample", "mean")}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        factor = float(pl_module.first_stage.module.scale_factor)
        torch.save({"factor": factor, **self.local}, self.path / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_ddp_latent_scale_factor_is_rank_0s_on_every_rank(tmp_path):
    """scale_by_std under 2-process DDP: rank 0 fits 1/std of its first batch and broadcasts it, so both ranks
    (whose own first batches would give different factors) train with one factor, the one checkpointed."""
    torch.manual_seed(0)
    build_autoencoder("kl", {"in_channels": 1, "out_channels": 1, "block_out_channels": [8, 16], "layers_per_block": 1,
                             "latent_channels": 2, "norm_num_groups": 4}).save_pretrained(tmp_path / "vae")
    images = write_pngs(tmp_path / "images")
    run_dir = tmp_path / "run"
    run_ddp(run_dir, images, "trainer.max_steps=2", "first_stage=pretrained",
            f"first_stage.source.pretrained={tmp_path / 'vae'}", "network.in_channels=2", "network.image_size=8",
            f"+callbacks.scale._target_={__name__}.ScaleRecorder", f"+callbacks.scale.path={run_dir / 'scale'}")
    ranks = [load(run_dir / "scale" / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["factor"] == ranks[1]["factor"] == load(run_dir / "checkpoints" / "last.ckpt")["state_dict"][
        "first_stage.module.scale_factor"].item()
    assert ranks[0]["factor"] == pytest.approx(ranks[0]["sample"], rel=0.05)  # rank 0's batch, another draw
    assert abs(ranks[1]["mean"] - ranks[0]["mean"]) > 1e-3 * ranks[0]["mean"]  # rank 1's own data differ
