"""Images in [-1, 1] as people look at them: uint8 (as saved PNGs), grids, files on disk."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor

from lit_diffusion.errors import UserError

FORMATS = ("png", "npz")


def to_uint8(images: Tensor) -> Tensor:
    """Images in [-1, 1] → uint8 the way a PNG stores them: round((x + 1) · 127.5)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_grid(images: Tensor, nrow: int | None = None) -> Tensor:
    """Images in [-1, 1] → one (C, H, W) grid in [0, 1] (``nrow`` columns, default √N)."""
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    return torchvision.utils.make_grid((images.float().clamp(-1, 1) + 1) / 2, nrow=nrow, padding=2)


def interleave_rows(sets: list[Tensor], nrow: int) -> Tensor:
    """Image sets of equal length as one sequence for a grid of ``nrow`` columns: row k of every set in turn
    (e.g. input | output | reference rows of a paired task).  A set whose images differ in size (a low-resolution
    input) is enlarged to the first set's size (nearest neighbour), a grey one repeated to its channels."""
    height, width = sets[0].shape[-2:]
    channels = max(s.shape[1] for s in sets)
    shown = [torch.nn.functional.interpolate(s.float(), size=(height, width), mode="nearest")
             .expand(-1, channels, -1, -1) for s in sets]
    chunks = [s.split(nrow) for s in shown]
    return torch.cat([chunk for group in zip(*chunks) for chunk in group])


def save_grid(images: Tensor, path: Path, nrow: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(to_grid(images, nrow), path)
    return path


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UserError(f"format={fmt} is not one of {', '.join(FORMATS)}")
    return fmt


def write_samples(images: Tensor, out: Path, fmt: str, nrow: int | None = None) -> Path:
    """Save ``grid.png`` and the individual images (``NNNNNN.png``) or ``samples.npz`` (uint8 NHWC)."""
    check_format(fmt)
    out.mkdir(parents=True, exist_ok=True)
    uint8 = to_uint8(images).cpu()
    if fmt == "npz":
        np.savez_compressed(out / "samples.npz", images=uint8.permute(0, 2, 3, 1).numpy())
    else:
        for i, image in enumerate(uint8):
            torchvision.io.write_png(image, str(out / f"{i:06d}.png"))
    return save_grid(images, out / "grid.png", nrow)
