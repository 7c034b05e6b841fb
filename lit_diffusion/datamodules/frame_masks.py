"""MCVD's masked conditioning on given frames as a pair transform (Voleti et al. 2022, "MCVD: Masked Conditional
Video Diffusion for Prediction, Generation, and Interpolation", §3).

MCVD trains one score network on videos whose past and/or future frames are randomly given or masked, so that the
same model generates unconditionally (nothing given), predicts (past frames given) and interpolates (past and
future given).  :class:`FrameMask` draws one of these tasks per item (from the item's generator, as every pair
transform here) and writes ``key`` (C + 1, T, H, W): the video with its frames to generate set to 0, and as last
channel the per-frame mask, 1 on given frames and 0 on frames to generate.  A
:class:`~lit_diffusion.conditioning.KnownFramesEmbedder` feeds it to the network through the concat route and the
model keeps the given frames unchanged in its samples.  Items marked ``independent`` (joint image/video training)
are always unconditional.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lit_diffusion.datamodules.pairs import ImageShape, PairTransform
from lit_diffusion.errors import UserError

TASKS = ("unconditional", "prediction", "interpolation")


def frame_mask(task: str, frames: int, past: int, future: int) -> torch.Tensor:
    """(T,) float mask of one task: 1 on the given frames (the first ``past``; for interpolation also the last
    ``future``), 0 on the frames to generate."""
    mask = torch.zeros(frames)
    if task in ("prediction", "interpolation"):
        mask[:past] = 1
    if task == "interpolation":
        mask[frames - future:] = 1
    return mask


def known_frames(video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(…, C, T, H, W) video and (…, T) mask → (…, C + 1, T, H, W): the given frames (others 0) and the mask."""
    mask = mask[..., None, :, None, None].to(video.dtype)
    return torch.cat([video * mask, mask.expand(*video.shape[:-4], 1, *video.shape[-3:])], dim=-4)


class FrameMask(PairTransform):
    """One MCVD task per item, drawn with ``probabilities`` (task → weight, normalised; a single task with weight 1
    fixes it, e.g. for evaluation), written to ``key`` as :func:`known_frames`.

    Args:
        past: frames given at the start (prediction and interpolation; 5 in the SM-MNIST protocol).
        future: frames given at the end (interpolation).
    """

    def __init__(self, past: int = 5, future: int = 5, probabilities: Mapping[str, float] | None = None,
                 key: str = "known_frames"):
        probabilities = dict(probabilities or dict.fromkeys(TASKS, 1.0))
        if unknown := sorted(set(probabilities) - set(TASKS)):
            raise UserError(f"FrameMask probabilities name unknown tasks {unknown}; the tasks are {', '.join(TASKS)}")
        if any(p < 0 for p in probabilities.values()) or sum(probabilities.values()) <= 0:
            raise UserError(f"FrameMask probabilities must be non-negative with a positive sum, got {probabilities}")
        if past < 1 or future < 1:
            raise UserError(f"FrameMask past={past} and future={future} must be positive")
        self.past, self.future, self.probabilities = past, future, probabilities
        self.keys = (key,)

    def check(self, image_shape: ImageShape) -> None:
        if len(image_shape) != 4:
            raise UserError(f"FrameMask needs videos (C, T, H, W), the data's samples are {tuple(image_shape)}: use a "
                            "video DataModule (data=moving_mnist or data=video_folder)")
        needed = self.past + (self.future if self.probabilities.get("interpolation", 0) > 0 else 0)
        if needed >= image_shape[1]:
            raise UserError(f"FrameMask gives {needed} frames (past={self.past}, future={self.future}) of videos of "
                            f"{image_shape[1]} frames, leaving none to generate: lower them or raise data.frames")

    def __call__(self, sample: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        video = sample["image"]
        tasks = list(self.probabilities)
        weights = torch.tensor([self.probabilities[t] for t in tasks], dtype=torch.float64)
        task = tasks[int(torch.multinomial(weights, 1, generator=generator))]
        if bool(sample.get("independent", False)):
            task = "unconditional"
        return {self.keys[0]: known_frames(video, frame_mask(task, video.shape[-3], self.past, self.future))}
