"""Periodic sample grids: every N optimizer steps and at the end of fit, from EMA weights, fixed seed."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torch.utils.data import default_collate

from lit_diffusion.callbacks.ema import ema_or_live
from lit_diffusion.datamodules.pairs import one_of
from lit_diffusion.errors import UserError
from lit_diffusion.generation import build_guider, draw
from lit_diffusion.images import interleave_rows, save_grid, to_grid
from lit_diffusion.metrics.images import SPLITS
from lit_diffusion.models.base import DiffusionModule


def log_grid(trainer: L.Trainer, tag: str, grid) -> None:
    """Send a (C, H, W) grid in [0, 1] to every logger that takes images (TensorBoard, W&B)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, grid, trainer.global_step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(tag, [grid], step=trainer.global_step)


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
        prompts: text-to-image: a fixed prompt list, one prompt per row of ``nrow`` images (``num_samples`` =
            ``nrow`` × the number of prompts shows each once).
        guider: ``{name: none | cfg | classifier, scale: …}`` (:func:`lit_diffusion.generation.build_guider`);
            None: the model's own (a classifier run guides with the classifier being trained).
        paired: ``val`` or ``train``: an image-conditioned model (SR3, Palette) is given the conditions of the
            first ``num_samples`` items of that split of the run's data, and the grid shows rows of inputs (the
            first condition), outputs and references in turn.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 500, num_samples: int = 64, nrow: int = 8,
                 seed: int = 0, sampler: dict | None = None, use_ema: bool = True,
                 class_labels: list[int] | None = None, prompts: list[str] | None = None, guider: dict | None = None,
                 paired: str | None = None):
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.nrow = nrow
        self.seed = seed
        self.sampler = sampler
        self.use_ema = use_ema
        self.class_labels = class_labels
        self.prompts = None if prompts is None else list(prompts)
        self.guider = None if guider is None else build_guider(guider)
        self.paired = None if paired is None else one_of("sample_grid.paired", paired, SPLITS)
        self.last_path: Path | None = None

    def write(self, trainer: L.Trainer, pl_module: DiffusionModule, name: str) -> Path | None:
        if not trainer.is_global_zero:
            return None
        model = ema_or_live(trainer, pl_module, self.use_ema)
        sampler = dict(self.sampler) if self.sampler else None
        batch = self.paired_items(trainer, model) if self.paired else None
        conditions = None if batch is None else {key: batch[key] for key in model.conditioner.input_keys}
        (result,) = draw(model, self.num_samples, sampler=sampler, seed=self.seed, batch_size=self.num_samples,
                         class_labels=self.class_labels, prompts=self.prompts, per_prompt=self.nrow, guider=self.guider,
                         conditions=conditions)
        nrow = self.nrow if batch is None else min(self.nrow, self.num_samples)
        images = result.images if batch is None else interleave_rows(
            [batch[model.conditioner.input_keys[0]], result.images, batch["image"]], nrow)
        path = save_grid(images, self.dirpath / f"{name}.png", nrow)
        log_grid(trainer, "samples", to_grid(images, nrow))
        self.last_path = path
        return path

    def paired_items(self, trainer: L.Trainer, model: DiffusionModule) -> dict:
        """The first ``num_samples`` items of split :attr:`paired` of the trainer's data, as one batch on the
        model's device."""
        datamodule = trainer.datamodule
        datamodule.setup("fit")
        dataset = datamodule.train_set if self.paired == "train" else datamodule.val_set
        if dataset is None or len(dataset) < self.num_samples:
            raise UserError(f"sample_grid.paired={self.paired}: the split has {0 if dataset is None else len(dataset)} "
                            f"items, fewer than sample_grid.num_samples={self.num_samples}")
        batch = default_collate([dataset[i] for i in range(self.num_samples)])
        return {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self.write(trainer, pl_module, f"step_{step:07d}")

    def on_train_end(self, trainer, pl_module) -> None:
        self.write(trainer, pl_module, "final")
