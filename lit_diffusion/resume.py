"""Resuming runs: ``ckpt_path=auto``, checkpoint files that are never half written, end-of-fit checkpoints.

* :func:`resolve_ckpt_path`: ``ckpt_path=auto`` resumes from the run folder's ``checkpoints/last.ckpt`` when
  there is one (a requeued SLURM job, a preempted run started again with the same ``hydra.run.dir``) and
  starts fresh otherwise.
* :class:`AtomicCheckpointIO`: Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose
  temporary file lies in the system temp directory (``tempfile.mkstemp()``), then moves it onto the checkpoint
  with ``shutil.move``.  That is a rename, hence atomic, only when the temp directory and the checkpoint are on the
  same file system; otherwise (a node-local ``/tmp``, checkpoints on a network file system, the usual cluster
  setup) ``shutil.move`` copies, and a run killed during the copy leaves a truncated ``last.ckpt``.  This IO
  writes a temporary file beside the checkpoint, flushes it to disk and renames it onto the target, so a
  reader sees the previous complete file or the new complete one, whatever interrupts the write.
* :func:`reopen_cut_epoch`: Lightning closes the epoch that ``max_steps`` (or ``should_stop``) cuts short
  before it writes its end-of-fit checkpoint, so a run resumed from it ("train longer") would start the next
  epoch and skip the rest of this one.  :class:`~lit_diffusion.callbacks.ResumableCheckpoint` writes the
  final ``last.ckpt`` before that happens; this function repairs checkpoints written the other way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig

from lit_diffusion.files import atomic_write

AUTO = "auto"
LAST = "last.ckpt"


def checkpoint_dir(cfg: DictConfig) -> Path:
    """The run's checkpoint folder: ``callbacks.model_checkpoint.dirpath``, else ``<output_dir>/checkpoints``."""
    callback = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
    return Path(callback.get("dirpath") or Path(cfg.paths.output_dir) / "checkpoints")


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``cfg.ckpt_path``, with ``auto`` replaced by the run folder's ``last.ckpt`` if it exists, else None."""
    if cfg.ckpt_path != AUTO:
        return cfg.ckpt_path
    last = checkpoint_dir(cfg) / LAST
    if last.is_file():
        rank_zero_info(f"ckpt_path=auto: resuming from {last}")
        return str(last)
    rank_zero_info(f"ckpt_path=auto: no {last} yet, starting a new run")
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``.<name>.<random>.tmp`` beside the target, ``fsync``, then ``os.replace`` onto it
    (:func:`lit_diffusion.files.atomic_write`).

    Remote paths (``s3://`` …) go to Lightning's IO.  A temporary file left by a killed process is removed
    by the next write of the same checkpoint.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # one writer per checkpoint: these are dead
            stale.unlink(missing_ok=True)
        atomic_write(path, lambda file: torch.save(checkpoint, file))


def reopen_cut_epoch(checkpoint: dict) -> bool:
    """Turn an end-of-fit checkpoint whose epoch was cut short into the mid-epoch checkpoint of the same step.

    Lightning's end-of-fit state differs from the state a periodic checkpoint of the same step records (at
    the end of the training batch) only in the fit loop's counters: the epoch is counted as processed and
    completed, the last batch as completed, and the logger's step as advanced.  Undo those, so that Lightning
    continues the epoch after the batches the data loader's state says are done.  Checkpoints of a complete
    epoch (its last batch seen) and mid-epoch checkpoints are left alone.  Returns whether it changed anything.
    Assumes learning-rate schedulers that step per optimizer step (all of lit_diffusion's): one stepped per
    epoch would have taken its epoch-end step already.
    """
    loop = (checkpoint.get("loops") or {}).get("fit_loop")
    if not loop or "epoch_progress" not in loop or "epoch_loop.batch_progress" not in loop:
        return False
    epochs, batches = loop["epoch_progress"], loop["epoch_loop.batch_progress"]
    closed = epochs["current"]["ready"] == epochs["current"]["processed"] == epochs["current"]["completed"] > 0
    cut = closed and not batches.get("is_last_batch", True) and batches["current"]["ready"] > 0 \
        and batches["current"]["completed"] == batches["current"]["processed"] == batches["current"]["ready"]
    if not cut:
        return False
    for part in ("current", "total"):
        epochs[part]["processed"] -= 1
        epochs[part]["completed"] -= 1
        batches[part]["completed"] -= 1
    stepped = loop.get("epoch_loop.state_dict") or {}
    if "_batches_that_stepped" in stepped:
        stepped["_batches_that_stepped"] -= 1
    if "epoch" in checkpoint:
        checkpoint["epoch"] -= 1
    return True
