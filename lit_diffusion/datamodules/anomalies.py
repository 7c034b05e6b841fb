"""Synthetic anomalies with exact masks, as a pair transform (:mod:`lit_diffusion.datamodules.pairs`).

Real anomaly data with pixel masks (MVTec AD, BraTS) cannot be installed here; pasted, drawn and local
intensity anomalies on real images give pixel-level ground truth for anomaly localisation, as in the
self-supervised anomaly literature (CutPaste, Li et al. 2021; DRAEM, Zavrtanik et al. 2021):

- ``patch``: a rectangle of the image, rotated by 180°, pasted at another place (CutPaste);
- ``stroke``: one to three brush polylines (LaMa's free-form strokes, :func:`~lit_diffusion.datamodules.pairs.free_form_mask`)
  painted white on dark and black on bright areas;
- ``intensity``: a rectangle whose values are shifted by ±δ, δ ~ U[0.5, 1] (darker where it was bright);
- ``mixed``: one of the three, drawn per item.

The mask is **exact**: it marks the pixels whose value the anomaly changed by more than ``min_change`` (in
[-1, 1] units), and pixels changed by less are left as they were, so the anomalous image differs from the
image exactly on the mask.  A draw that changes nothing (a patch of background pasted onto background) is
drawn again, up to :attr:`SyntheticAnomaly.MAX_DRAWS` times.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lit_diffusion.datamodules.pairs import Mask, PairTransform, free_form_mask, one_of
from lit_diffusion.errors import UserError


class SyntheticAnomaly(PairTransform):
    """Writes ``key``, the image with one synthetic anomaly, and ``mask_key``, its (1, H, W) mask (1 where the
    image was changed).  Rectangles have sides between ``min_size`` and ``max_size`` of the image's."""

    KINDS = ("patch", "stroke", "intensity", "mixed")
    STROKE = {"min_times": 1, "max_times": 3, "max_width": 20, "max_angle": 4, "max_len": 150, "box_odds": 0.0,
              "box": None}
    """LaMa's irregular-mask arguments for the strokes, in pixels of a 256 × 256 image (scaled to the image)."""
    MAX_DRAWS = 20

    def __init__(self, kind: str = "mixed", key: str = "anomalous", mask_key: str = "anomaly_mask",
                 min_size: float = 0.15, max_size: float = 0.35, min_change: float = 0.1):
        if not 0 < min_size <= max_size <= 0.5:
            raise UserError(f"SyntheticAnomaly sizes must satisfy 0 < min_size <= max_size <= 0.5, got {min_size}, "
                            f"{max_size}")
        if not 0 <= min_change < 2:
            raise UserError(f"SyntheticAnomaly min_change must lie in [0, 2), got {min_change}")
        self.kind = one_of("SyntheticAnomaly kind", kind, self.KINDS)
        self.box = Mask("box", min_size=min_size, max_size=max_size)
        self.min_change = min_change
        self.keys = (key, mask_key)

    def __call__(self, sample: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        image = sample["image"]
        changed = torch.zeros(image.shape[-2:], dtype=torch.bool)
        altered = image
        for _ in range(self.MAX_DRAWS):
            kind = self.kind if self.kind != "mixed" else self.KINDS[int(torch.randint(3, (), generator=generator))]
            altered = getattr(self, kind)(image, generator)
            changed = (altered - image).abs().amax(0) > self.min_change
            if changed.any():
                break
        return dict(zip(self.keys, (torch.where(changed, altered, image), changed[None].to(image.dtype))))

    def patch(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """CutPaste: the content of one rectangle, rotated by 180°, pasted onto another of the same size."""
        rows, cols = self.box.hole(*image.shape[-2:], generator)
        height, width = rows.stop - rows.start, cols.stop - cols.start
        top = int(torch.randint(image.shape[-2] - height + 1, (), generator=generator))
        left = int(torch.randint(image.shape[-1] - width + 1, (), generator=generator))
        altered = image.clone()
        altered[:, rows, cols] = image[:, top:top + height, left:left + width].flip(-1, -2)
        return altered

    def stroke(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Brush strokes, white where the stroke covers a dark area on average and black otherwise."""
        height, width = image.shape[-2:]
        drawn = free_form_mask(height, width, generator, **self.STROKE, scale=min(height, width) / Mask.REFERENCE_SIZE)
        value = -1.0 if image[:, drawn].mean() > 0 else 1.0
        return torch.where(drawn, torch.full_like(image, value), image)

    def intensity(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A rectangle shifted by δ ~ U[0.5, 1] towards the opposite end of the range, clamped to [-1, 1]."""
        rows, cols = self.box.hole(*image.shape[-2:], generator)
        delta = 0.5 + 0.5 * float(torch.rand((), generator=generator, dtype=torch.float64))
        region = image[:, rows, cols]
        altered = image.clone()
        altered[:, rows, cols] = (region - math.copysign(delta, float(region.mean()))).clamp(-1, 1)
        return altered
