"""Periodic reconstruction grids of a first-stage autoencoder: originals | reconstructions, every N steps and at
the end of fit, from the EMA weights, always of the same images (the first validation images)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torchvision
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lit_diffusion.callbacks.ema import ema_or_live
from lit_diffusion.callbacks.sample_grid import log_grid
from lit_diffusion.images import to_grid

GAP = 4  # white columns between the two halves


class ReconstructionGrid(Callback):
    """Write ``step_XXXXXXX.png`` / ``final.png`` to ``dirpath`` (left: originals, right: reconstructions, the same
    grid position in both halves) and log the image to every TensorBoard / W&B logger as ``reconstructions``.

    Args:
        dirpath: output folder.
        every_n_steps: optimizer steps between grids (0: only at the end).
        num_images, nrow: images per half and columns per half.
        use_ema: reconstruct with the EMA weights when an :class:`~lit_diffusion.callbacks.EMA` callback has them.
        sample: reconstruct KL models from a posterior draw instead of its mode.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 500, num_images: int = 32, nrow: int = 8,
                 use_ema: bool = True, sample: bool = False):
        self.dirpath = Path(dirpath)
        self.every_n_steps, self.num_images, self.nrow = every_n_steps, num_images, nrow
        self.use_ema, self.sample = use_ema, sample
        self.last_path: Path | None = None
        self._images: Tensor | None = None

    def images(self, trainer: L.Trainer, batch: dict | None = None) -> Tensor:
        """The fixed images: the first validation images, else the first training batch seen."""
        if self._images is None:
            datamodule = getattr(trainer, "datamodule", None)
            loader = datamodule.val_dataloader() if datamodule is not None else []
            found: list[Tensor] = []
            for val_batch in loader if loader else []:
                found.append(val_batch["image"])
                if sum(len(f) for f in found) >= self.num_images:
                    break
            if not found and batch is not None:
                found = [batch["image"]]
            if not found:
                return torch.empty(0)
            self._images = torch.cat(found)[: self.num_images].detach().cpu()
        return self._images

    @torch.no_grad()
    def write(self, trainer: L.Trainer, pl_module, name: str, batch: dict | None = None) -> Path | None:
        if not trainer.is_global_zero:
            return None
        images = self.images(trainer, batch)
        if images.numel() == 0:
            return None
        model = ema_or_live(trainer, pl_module, self.use_ema)
        was_training = model.training
        model.eval()
        try:
            rec = model.reconstruct(images.to(pl_module.device), sample=self.sample).cpu()
        finally:
            model.train(was_training)
        left, right = to_grid(images, self.nrow), to_grid(rec, self.nrow)
        gap = torch.ones(left.shape[0], left.shape[1], GAP)
        grid = torch.cat([left, gap, right], dim=2)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"{name}.png"
        torchvision.utils.save_image(grid, path)
        log_grid(trainer, "reconstructions", grid)
        self.last_path = path
        return path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self.write(trainer, pl_module, f"step_{step:07d}", batch)
        elif self._images is None:
            self.images(trainer, batch)  # fix the images early (a training batch when there is no validation)

    def on_train_end(self, trainer, pl_module) -> None:
        self.write(trainer, pl_module, "final")
