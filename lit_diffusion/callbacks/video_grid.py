"""Periodic video sample grids: :class:`~lit_diffusion.callbacks.sample_grid.SampleGrid` for video models, written
as animated GIFs and logged to W&B as videos."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from lit_diffusion.callbacks.ema import ema_or_live
from lit_diffusion.callbacks.sample_grid import SampleGrid
from lit_diffusion.generation import draw
from lit_diffusion.models.base import DiffusionModule
from lit_diffusion.videos import interleave_video_rows, log_video, save_gif


class VideoGrid(SampleGrid):
    """``step_XXXXXXX.gif`` and ``final.gif`` of sampled videos in ``dirpath`` (arguments of :class:`SampleGrid`;
    ``fps``: GIF frame rate).  With ``paired`` (a model conditioned on given frames, MCVD) the first ``num_samples``
    items of that split give the conditions — each its own task of the data's ``FrameMask`` — and the grid shows rows
    of given frames (others grey), samples and the real videos in turn."""

    def __init__(self, *args, fps: float = 4.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.fps = fps

    def write(self, trainer: L.Trainer, pl_module: DiffusionModule, name: str) -> Path | None:
        if not trainer.is_global_zero:
            return None
        model = ema_or_live(trainer, pl_module, self.use_ema)
        batch = self.paired_items(trainer, model) if self.paired else None
        conditions = None if batch is None else {key: batch[key] for key in model.conditioner.input_keys}
        (result,) = draw(model, self.num_samples, sampler=dict(self.sampler) if self.sampler else None, seed=self.seed,
                         batch_size=self.num_samples, conditions=conditions)
        videos, nrow = result.images, self.nrow
        if batch is not None:
            given = model.conditioner.known(conditions)
            rows = [result.images, batch["image"]] if given is None else [given[0], result.images, batch["image"]]
            nrow = min(self.nrow, self.num_samples)
            videos = interleave_video_rows([r.to(result.images) for r in rows], nrow)
        path = save_gif(videos, self.dirpath / f"{name}.gif", nrow, self.fps)
        log_video(trainer, "samples", path)
        self.last_path = path
        return path
