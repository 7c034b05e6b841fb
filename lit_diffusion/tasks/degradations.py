"""Degradations by name, as pair-transform configs of :mod:`lit_diffusion.datamodules.pairs` (so the
DataModule applies them, deterministic per (data seed, item)).

Masks (RePaint's inputs; ``mask`` then ``masked_image`` keys): ``center``, ``box``, ``half``, ``wide``,
``narrow``, ``lines``, ``expand``.  Guides (SDEdit's inputs; key ``guide``): ``clean`` (the image itself),
``blur[S]`` (Gaussian blur, σ = S px, default 2), ``quantize[L]`` (L levels per channel, default 4),
``jpeg[Q]`` (quality Q, default 10), ``sr[F]`` (bicubic ×F down and up again, default 4), ``masked_*``
(any mask name: the image with its missing pixels grey).
"""

from __future__ import annotations

import re

from lit_diffusion.datamodules.pairs import Mask
from lit_diffusion.errors import UserError

PAIRS = "lit_diffusion.datamodules.pairs."
MASK_KEY, MASKED_KEY, GUIDE_KEY = "mask", "masked_image", "guide"
GUIDES = {  # name: (pair transform, its parameter, the default value, how to read the number)
    "blur": ("Blur", "sigma", 2.0, float),
    "quantize": ("Quantize", "levels", 4, int),
    "jpeg": ("JPEG", "quality", 10, int),
    "sr": ("LowResolution", "factor", 4, int),
}


def mask_config(name: str) -> dict:
    """The pair config of mask ``name`` (keys ``mask``, 1 = known, and ``masked_image``)."""
    if name not in Mask.KINDS:
        raise UserError(f"unknown mask '{name}': choose one of {', '.join(Mask.KINDS)}")
    return {"_target_": PAIRS + "Mask", "kind": name, "key": MASK_KEY, "masked_key": MASKED_KEY}


def guide_config(name: str) -> dict | None:
    """The pair config of guide ``name`` writing key ``guide`` (None for ``clean``: the image is the guide)."""
    name = str(name)
    if name == "clean":
        return None
    if name.startswith("masked_"):
        return {**mask_config(name.removeprefix("masked_")), "masked_key": GUIDE_KEY}
    match = re.fullmatch(r"([a-z]+)(\d+(?:\.\d+)?)?", name)
    if match is None or match.group(1) not in GUIDES:
        raise UserError(f"unknown guide '{name}': choose clean, blur[SIGMA], quantize[LEVELS], jpeg[QUALITY], "
                        f"sr[FACTOR] or masked_<mask> (e.g. blur2, quantize4, jpeg10, sr4, masked_center)")
    target, parameter, default, kind = GUIDES[match.group(1)]
    value = default if match.group(2) is None else kind(float(match.group(2)))
    return {"_target_": PAIRS + target, parameter: value, "key": GUIDE_KEY}
