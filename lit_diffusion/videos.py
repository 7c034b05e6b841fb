"""Videos in [-1, 1] as people look at them: grids of videos as animated GIFs (imageio), W&B videos.

A batch of videos is (N, C, T, H, W); a video grid is the image grid of :func:`lit_diffusion.images.to_grid` drawn
frame by frame, so frame t of the GIF shows frame t of every video.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from lit_diffusion.images import interleave_rows, to_grid


def check_videos(videos: Tensor) -> Tensor:
    if videos.dim() != 5:
        raise ValueError(f"expected videos (N, C, T, H, W), got shape {tuple(videos.shape)}")
    return videos


def video_grid(videos: Tensor, nrow: int | None = None) -> Tensor:
    """Videos (N, C, T, H, W) in [-1, 1] → uint8 grid frames (T, H', W', C) with ``nrow`` videos per row."""
    frames = [to_grid(check_videos(videos)[:, :, t], nrow) for t in range(videos.shape[2])]
    return (torch.stack(frames) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def interleave_video_rows(sets: list[Tensor], nrow: int) -> Tensor:
    """Video sets of equal shape as one sequence for a grid of ``nrow`` columns: row k of every set in turn
    (:func:`lit_diffusion.images.interleave_rows`, with each video's frames as channels)."""
    channels, frames = sets[0].shape[1:3]
    return interleave_rows([check_videos(s).flatten(1, 2) for s in sets], nrow).unflatten(1, (channels, frames))


def save_gif(videos: Tensor, path: Path, nrow: int | None = None, fps: float = 4.0) -> Path:
    """Write a looping animated GIF of the video grid of ``videos``."""
    frames = video_grid(videos, nrow).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, frames[..., 0] if frames.shape[-1] == 1 else frames, extension=".gif",
                duration=1000 / fps, loop=0)
    return path


def log_video(trainer: L.Trainer, tag: str, path: Path) -> None:
    """Send the GIF at ``path`` to every W&B logger as a W&B video (other loggers take no videos here)."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_video(tag, [str(path)], step=trainer.global_step, format=["gif"])
