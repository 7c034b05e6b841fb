"""Periodic sample grids: every N optimizer steps and at the end of fit, from EMA weights, fixed seed."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torchvision
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from lit_diffusion.callbacks.ema import ema_or_live
from lit_diffusion.models.base import DiffusionModule


def to_grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """Images in [-1, 1] → one (C, H, W) grid in [0, 1]."""
    return torchvision.utils.make_grid((images.float().clamp(-1, 1) + 1) / 2, nrow=nrow, padding=2)


class SampleGrid(Callback):
    """Write a PNG grid of samples to ``dirpath`` and to every logger that takes images.

    Args:
        dirpath: folder for ``step_XXXXXXX.png`` and ``final.png``.
        every_n_steps: optimizer steps between grids (0: only at the end).
        num_samples, nrow: grid size.
        seed: sampling seed, the same for every grid so that grids are comparable over training.
        sampler: sampler config (default: the model's).
        use_ema: sample from the EMA weights when an :class:`EMA` callback is present.
        class_labels: labels cycled over the grid (class-conditional or classifier-guided models).
        guidance_scale: classifier-free guidance scale, or the classifier-guidance scale of a classifier run.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 500, num_samples: int = 64, nrow: int = 8,
                 seed: int = 0, sampler: dict | None = None, use_ema: bool = True,
                 class_labels: list[int] | None = None, guidance_scale: float | None = None):
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.nrow = nrow
        self.seed = seed
        self.sampler = sampler
        self.use_ema = use_ema
        self.class_labels = class_labels
        self.guidance_scale = guidance_scale
        self.last_path: Path | None = None

    def write(self, trainer: L.Trainer, pl_module: DiffusionModule, name: str) -> Path | None:
        if not trainer.is_global_zero:
            return None
        model = ema_or_live(trainer, pl_module, self.use_ema)
        sampler = dict(self.sampler) if self.sampler else None
        labels = None
        if self.class_labels is not None:
            labels = torch.tensor(list(self.class_labels), device=pl_module.device)
            labels = labels.repeat(-(-self.num_samples // len(labels)))[: self.num_samples]
        images = model.sample(self.num_samples, sampler=sampler, seed=self.seed, class_labels=labels,
                              guidance_scale=self.guidance_scale).images
        grid = to_grid(images, self.nrow)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"{name}.png"
        torchvision.utils.save_image(grid, path)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", grid, trainer.global_step)
            elif isinstance(logger, WandbLogger):
                logger.log_image("samples", [grid], step=trainer.global_step)
        self.last_path = path
        return path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self.write(trainer, pl_module, f"step_{step:07d}")

    def on_train_end(self, trainer, pl_module) -> None:
        self.write(trainer, pl_module, "final")
