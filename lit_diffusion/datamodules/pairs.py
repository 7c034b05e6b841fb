"""Pair transforms: the conditioning input of image-to-image diffusion, computed from each sample's image.

A pair transform is called as ``transform(sample, generator)``: ``sample`` is a sample dict whose ``image``
(C, H, W) in [-1, 1] is already mirrored when the sampler chose the flipped view, and ``generator`` is a
``torch.Generator`` seeded from ``(data seed, item index)``.  It returns the new keys (:attr:`PairTransform.keys`),
which the DataModule adds to the sample (:class:`lit_diffusion.datamodules.base.SampleViews`).  So a pair
is always aligned with the image it is batched with, and item ``i`` gets the same random mask in every
epoch, worker, batch size and resumed run.

- :class:`LowResolution`: the super-resolution input of SR3 (Saharia et al. 2021, "Image Super-Resolution
  via Iterative Refinement"): the image downsampled (bicubic, antialiased), then upsampled back.
- :class:`Mask`: inpainting (centre or random box) and uncropping (a missing half), the masked-image
  tasks of Palette (Saharia et al. 2022, "Palette: Image-to-Image Diffusion Models").
- :class:`Grayscale`: the input of colorization (Palette), the ITU-R 601-2 luma.

In a data config they are named entries of ``pairs`` (see :class:`lit_diffusion.datamodules.ImageDataModule`);
:func:`build_pairs` instantiates and checks them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lit_diffusion.config import to_plain, trusted_class
from lit_diffusion.errors import UserError

RESERVED_KEYS = ("image", "label")
"""Keys every sample may already have, which no pair transform may write."""

ImageShape = tuple[int, int, int]


class PairTransform:
    """Base of the pair transforms: ``transform(sample, generator)`` returns the keys :attr:`keys`."""

    keys: tuple[str, ...] = ()
    """The sample keys this transform adds."""

    def check(self, image_shape: ImageShape) -> None:
        """Raise :class:`UserError` when the transform cannot apply to images of shape (C, H, W)."""

    def __call__(self, sample: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def one_of(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` when it is one of ``choices``; a :class:`UserError` naming the argument otherwise."""
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


class LowResolution(PairTransform):
    """``image`` downsampled by ``factor`` (antialiased ``mode`` interpolation), with ``upsample`` resized
    back to the full size as SR3 conditions on it; values clamped to [-1, 1] after each resize."""

    MODES = ("bicubic", "bilinear", "area")

    def __init__(self, factor: int, key: str = "low_res", mode: str = "bicubic", upsample: bool = True):
        if not isinstance(factor, int) or factor < 1:
            raise UserError(f"LowResolution factor must be a positive integer, got {factor!r}")
        self.factor, self.mode, self.upsample = factor, one_of("LowResolution mode", mode, self.MODES), upsample
        self.keys = (key,)

    def check(self, image_shape: ImageShape) -> None:
        if image_shape[1] % self.factor or image_shape[2] % self.factor:
            raise UserError(
                f"LowResolution factor={self.factor} does not divide the image size {image_shape[1]}x"
                f"{image_shape[2]}: choose a factor that divides data.image_size, or change data.image_size"
            )

    def resize(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(1, C, h, w) -> (1, C, *size) by :attr:`mode` (antialiased unless it is "area"), clamped."""
        return F.interpolate(image, size=size, mode=self.mode, antialias=self.mode != "area").clamp(-1, 1)

    def __call__(self, sample: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        image = sample["image"][None]
        height, width = image.shape[-2:]
        low = self.resize(image, (height // self.factor, width // self.factor))
        return {self.keys[0]: (self.resize(low, (height, width)) if self.upsample else low)[0]}


class Mask(PairTransform):
    """A missing region: ``key`` is a (1, H, W) float mask, **1 where the pixel is known, 0 where it is
    missing**; ``masked_key`` is ``image`` with the missing pixels set to 0 (mid-grey in [-1, 1]).

    - ``kind="center"``: the centred rectangle of ``size`` times the image's height and width is missing;
    - ``kind="box"``: a rectangle is missing whose height and width are drawn uniformly between ``min_size``
      and ``max_size`` times the image's (rounded to pixels), at a uniform position;
    - ``kind="half"``: the ``side`` half ("left", "right", "top", "bottom") is missing (uncropping); with
      ``side=None`` the side is drawn per item.
    """

    KINDS = ("center", "box", "half")
    SIDES = ("left", "right", "top", "bottom")

    def __init__(
        self,
        kind: str = "center",
        key: str = "mask",
        masked_key: str = "masked_image",
        size: float = 0.5,
        min_size: float = 0.25,
        max_size: float = 0.5,
        side: str | None = None,
    ):
        if not 0 < size <= 1 or not 0 < min_size <= max_size <= 1:
            raise UserError(f"Mask sizes must satisfy 0 < size <= 1 and 0 < min_size <= max_size <= 1, got "
                            f"size={size}, min_size={min_size}, max_size={max_size}")
        self.kind, self.side = one_of("Mask kind", kind, self.KINDS), one_of("Mask side", side, (*self.SIDES, None))
        self.size, self.min_size, self.max_size = size, min_size, max_size
        self.keys = (key, masked_key)

    def hole(self, height: int, width: int, generator: torch.Generator) -> tuple[slice, slice]:
        """The rows and columns of the missing rectangle."""
        def draw(low: int, high: int) -> int:  # uniform in [low, high]
            return int(torch.randint(low, high + 1, (), generator=generator))

        if self.kind == "half":
            all_rows, all_columns = slice(0, height), slice(0, width)
            return {
                "left": (all_rows, slice(0, width // 2)),
                "right": (all_rows, slice(width - width // 2, width)),
                "top": (slice(0, height // 2), all_columns),
                "bottom": (slice(height - height // 2, height), all_columns),
            }[self.side or self.SIDES[draw(0, 3)]]
        spans = []
        for length in (height, width):
            if self.kind == "center":
                span = round(self.size * length)
                start = (length - span) // 2
            else:
                span = draw(max(1, round(self.min_size * length)), max(1, round(self.max_size * length)))
                start = draw(0, length - span)
            spans.append(slice(start, start + span))
        return spans[0], spans[1]

    def __call__(self, sample: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        image = sample["image"]
        rows, columns = self.hole(*image.shape[-2:], generator)
        mask = torch.ones(1, *image.shape[-2:], dtype=image.dtype)
        mask[:, rows, columns] = 0
        return dict(zip(self.keys, (mask, image * mask)))


class Grayscale(PairTransform):
    """The luma of an RGB ``image`` as one channel, with the ITU-R 601-2 weights (PIL's ``convert("L")``)."""

    WEIGHTS = (0.299, 0.587, 0.114)

    def __init__(self, key: str = "gray"):
        self.keys = (key,)

    def check(self, image_shape: ImageShape) -> None:
        if image_shape[0] != 3:
            raise UserError("Grayscale needs RGB images: set data.channels=3 (the images are grey already)")

    def __call__(self, sample: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        image = sample["image"]
        weights = torch.tensor(self.WEIGHTS, dtype=image.dtype).view(3, 1, 1)
        return {self.keys[0]: (image * weights).sum(0, keepdim=True)}


def build_pair(config: Any) -> PairTransform:
    """One pair transform: an instance (Hydra built it already) or a config whose ``_target_`` under
    ``lit_diffusion.`` names a :class:`PairTransform` subclass (checked before anything is constructed)."""
    if isinstance(config, PairTransform):
        return config
    arguments = dict(to_plain(config)) if isinstance(config, Mapping) else {}
    target = arguments.pop("_target_", None)
    cls = None
    if isinstance(target, str) and target.startswith("lit_diffusion."):
        with contextlib.suppress(ImportError, ValueError):  # no such class: reported below
            cls = trusted_class(target)
    if not (isinstance(cls, type) and issubclass(cls, PairTransform)):
        raise UserError(f"not a pair transform (its _target_ is {target!r}): set its _target_ to "
                        "lit_diffusion.datamodules.pairs.LowResolution, .Mask or .Grayscale")
    try:
        return cls(**arguments)
    except TypeError as error:  # a missing or unknown argument
        raise UserError(str(error)) from None


def build_pairs(pairs: Mapping[str, Any] | Sequence[Any] | None, image_shape: ImageShape) -> tuple[PairTransform, ...]:
    """The pair transforms of ``data.pairs``, in order: a dict of named configs (a ``null`` one is left out,
    so an override can switch one off) or a list; each is checked against ``image_shape`` and must add keys
    that neither the sample (:data:`RESERVED_KEYS`) nor an earlier transform has.  Errors name the entry."""
    if isinstance(pairs, Mapping):
        named = [(f"data.pairs.{name}", config) for name, config in pairs.items()]
    else:
        named = [(f"data.pairs[{index}]", config) for index, config in enumerate(pairs or ())]
    transforms, writer = [], dict.fromkeys(RESERVED_KEYS, "the dataset")
    for where, config in named:
        if config is None:
            continue
        try:
            transform = build_pair(config)
            transform.check(image_shape)
        except UserError as error:
            raise UserError(f"{where}: {error}") from None
        for key in transform.keys:
            if key in writer:
                raise UserError(f"{where} writes the sample key {key!r}, which {writer[key]} writes too: "
                                f"set {where}.key (or masked_key) to another name")
            writer[key] = where
        transforms.append(transform)
    return tuple(transforms)
