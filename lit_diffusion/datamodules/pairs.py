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
  tasks of Palette (Saharia et al. 2022, "Palette: Image-to-Image Diffusion Models"); the masks of RePaint's
  evaluation (Lugmayr et al. 2022): LaMa's wide and narrow free-form strokes (Suvorov et al. 2022), every
  second line, and expand (only a centred box known).
- :class:`Grayscale`: the input of colorization (Palette), the ITU-R 601-2 luma.
- :class:`JPEG`: JPEG compression artefacts at a given quality (PIL's encoder), the input of Palette's
  JPEG restoration.
- :class:`Blur` and :class:`Quantize`: Gaussian blur and colour/level quantisation, coarse guides for SDEdit
  (Meng et al. 2022) in place of hand-drawn strokes.
- :class:`OneOf`: one of several of the above per item, under common keys (Palette's multi-task training).

In a data config they are named entries of ``pairs`` (see :class:`lit_diffusion.datamodules.ImageDataModule`);
:func:`build_pairs` instantiates and checks them.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from lit_diffusion.config import to_plain, trusted_class
from lit_diffusion.errors import UserError

RESERVED_KEYS = ("image", "label")
"""Keys every sample may already have, which no pair transform may write."""

ImageShape = tuple[int, int, int]


class PairTransform:
    """Base of the pair transforms: ``transform(sample, generator)`` returns the keys :attr:`keys`."""

    keys: tuple[str, ...] = ()
    """The sample keys this transform adds."""

    @property
    def degraded_key(self) -> str:
        """The key of the degraded image among :attr:`keys` (what an image-to-image model restores)."""
        return self.keys[0]

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
      ``side=None`` the side is drawn per item;
    - ``kind="wide"`` / ``"narrow"``: LaMa's free-form masks (Suvorov et al. 2022, ``random_thick_256`` /
      ``random_thin_256`` of their ``configs/data_gen``), the "Wide" and "Narrow" masks of RePaint's
      evaluation: random polylines of thick (wide; or, with odds 0.3 : 1, one to three boxes) or thin (narrow)
      brush strokes, their lengths and widths given for 256 × 256 images and scaled to the image size; a
      draw that hides more than ``max_area`` of the image is drawn again, as LaMa's ``max_tamper_area``;
    - ``kind="lines"``: every second row is missing (RePaint's "Alternating Lines"), the odd rows;
    - ``kind="expand"``: only the centred rectangle of ``size`` times the height and width is known
      (RePaint's "Expand"; ``size=0.5`` keeps the central half of each side, 75 % of the pixels missing).
    """

    KINDS = ("center", "box", "half", "wide", "narrow", "lines", "expand")
    SIDES = ("left", "right", "top", "bottom")
    FREE_FORM = {  # LaMa's generator arguments, in pixels of a 256 × 256 image
        "wide": {"min_times": 1, "max_times": 5, "max_width": 100, "max_angle": 4, "max_len": 200,
                 "box_odds": 0.3, "box": {"margin": 10, "min_size": 30, "max_size": 150, "min_times": 1, "max_times": 3}},
        "narrow": {"min_times": 4, "max_times": 50, "max_width": 10, "max_angle": 4, "max_len": 40,
                   "box_odds": 0.0, "box": None},
    }
    REFERENCE_SIZE = 256
    MAX_DRAWS = 100

    def __init__(
        self,
        kind: str = "center",
        key: str = "mask",
        masked_key: str = "masked_image",
        size: float = 0.5,
        min_size: float = 0.25,
        max_size: float = 0.5,
        side: str | None = None,
        max_area: float = 0.5,
    ):
        if not 0 < size <= 1 or not 0 < min_size <= max_size <= 1:
            raise UserError(f"Mask sizes must satisfy 0 < size <= 1 and 0 < min_size <= max_size <= 1, got "
                            f"size={size}, min_size={min_size}, max_size={max_size}")
        if not 0 < max_area <= 1:
            raise UserError(f"Mask max_area must satisfy 0 < max_area <= 1, got {max_area}")
        self.kind, self.side = one_of("Mask kind", kind, self.KINDS), one_of("Mask side", side, (*self.SIDES, None))
        self.size, self.min_size, self.max_size, self.max_area = size, min_size, max_size, max_area
        self.keys = (key, masked_key)

    @property
    def degraded_key(self) -> str:
        return self.keys[1]

    def hole(self, height: int, width: int, generator: torch.Generator) -> tuple[slice, slice]:
        """The rows and columns of the missing rectangle (kinds center, box, half; for expand the known one)."""
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
            if self.kind in ("center", "expand"):
                span = round(self.size * length)
                start = (length - span) // 2
            else:
                span = draw(max(1, round(self.min_size * length)), max(1, round(self.max_size * length)))
                start = draw(0, length - span)
            spans.append(slice(start, start + span))
        return spans[0], spans[1]

    def missing(self, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """A (H, W) bool tensor, True where the pixel is missing."""
        missing = torch.zeros(height, width, dtype=torch.bool)
        if self.kind in ("center", "box", "half"):
            rows, columns = self.hole(height, width, generator)
            missing[rows, columns] = True
        elif self.kind == "expand":
            rows, columns = self.hole(height, width, generator)
            missing[:] = True
            missing[rows, columns] = False
        elif self.kind == "lines":
            missing[1::2] = True
        else:
            for _ in range(self.MAX_DRAWS):
                missing = free_form_mask(height, width, generator, **self.FREE_FORM[self.kind],
                                         scale=min(height, width) / self.REFERENCE_SIZE)
                if missing.float().mean() <= self.max_area:
                    break
        return missing

    def __call__(self, sample: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        image = sample["image"]
        mask = (~self.missing(*image.shape[-2:], generator)).to(image.dtype)[None]
        return dict(zip(self.keys, (mask, image * mask)))


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform in [low, high) (numpy's ``randint`` convention), from ``generator``."""
    return int(torch.randint(low, max(high, low + 1), (), generator=generator))


def _segment(missing: torch.Tensor, start: tuple[float, float], end: tuple[float, float], width: float) -> None:
    """Mark the pixels whose centres lie within ``width``/2 of the segment (x, y) ``start``–``end`` (a brush
    stroke with round ends, as OpenCV's thick ``line``); at least the pixels the segment passes through."""
    height, cols = missing.shape
    ys = torch.arange(height, dtype=torch.float64)[:, None] + 0.5
    xs = torch.arange(cols, dtype=torch.float64)[None, :] + 0.5
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    t = (((xs - x0) * dx + (ys - y0) * dy) / length2).clamp(0, 1) if length2 > 0 else torch.zeros_like(xs + ys)
    distance = torch.hypot(xs - (x0 + t * dx), ys - (y0 + t * dy))
    missing |= distance <= max(width / 2, math.sqrt(0.5))


def free_form_mask(height: int, width: int, generator: torch.Generator, *, min_times: int, max_times: int,
                   max_width: int, max_angle: int, max_len: int, box_odds: float, box: dict | None,
                   scale: float) -> torch.Tensor:
    """LaMa's ``MixedMaskGenerator`` with an irregular generator (odds 1) and optionally a box generator
    (odds ``box_odds``): ``make_random_irregular_mask`` (polylines of 1–5 segments, brush 5 + U[0, max_width)
    px, length 10 + U[0, max_len) px, angles 0.01 + U{0 … max_angle − 1} rad) or ``make_random_rectangle_mask``;
    pixel lengths are multiplied by ``scale`` (image size / 256).  Returns (H, W) bool, True = missing."""
    missing = torch.zeros(height, width, dtype=torch.bool)
    if box is not None and float(torch.rand((), generator=generator, dtype=torch.float64)) < box_odds / (1 + box_odds):
        margin = max(0, round(box["margin"] * scale))
        low = max(1, round(box["min_size"] * scale))
        high = max(low + 1, min(round(box["max_size"] * scale), height - 2 * margin, width - 2 * margin))
        for _ in range(_randint(generator, box["min_times"], box["max_times"] + 1)):
            box_w, box_h = _randint(generator, low, high), _randint(generator, low, high)
            x = _randint(generator, margin, width - margin - box_w + 1)
            y = _randint(generator, margin, height - margin - box_h + 1)
            missing[y:y + box_h, x:x + box_w] = True
        return missing
    for stroke in range(_randint(generator, min_times, max_times + 1)):
        x, y = _randint(generator, 0, width) + 0.5, _randint(generator, 0, height) + 0.5  # a pixel's centre
        for _ in range(1 + _randint(generator, 0, 5)):
            angle = 0.01 + _randint(generator, 0, max_angle)
            if stroke % 2 == 0:
                angle = 2 * math.pi - angle
            length = (10 + _randint(generator, 0, max_len)) * scale
            brush = (5 + _randint(generator, 0, max_width)) * scale
            end_x = min(max(x + length * math.sin(angle), 0.0), float(width))
            end_y = min(max(y + length * math.cos(angle), 0.0), float(height))
            _segment(missing, (x, y), (end_x, end_y), brush)
            x, y = end_x, end_y
    return missing


class Grayscale(PairTransform):
    """The luma of an RGB ``image``, with the ITU-R 601-2 weights (PIL's ``convert("L")``): one channel, or
    ``channels=3`` copies of it (a grey RGB image), so that colorization's source shares the concat channels of the
    other degradations in a Palette generalist (a :class:`OneOf` choice)."""

    WEIGHTS = (0.299, 0.587, 0.114)

    def __init__(self, key: str = "gray", channels: int = 1):
        if channels not in (1, 3):
            raise UserError(f"Grayscale channels must be 1 (the luma) or 3 (the luma copied to RGB), got {channels!r}")
        self.keys, self.channels = (key,), channels

    def check(self, image_shape: ImageShape) -> None:
        if image_shape[0] != 3:
            raise UserError("Grayscale needs RGB images: set data.channels=3 (the images are grey already)")

    def __call__(self, sample: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        image = sample["image"]
        weights = torch.tensor(self.WEIGHTS, dtype=image.dtype).view(3, 1, 1)
        return {self.keys[0]: (image * weights).sum(0, keepdim=True).repeat(self.channels, 1, 1)}


def to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) in [-1, 1] → a PIL image ("L" or "RGB") of its uint8 values, round((x + 1) · 127.5)."""
    array = ((image.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def from_pil(image: Image.Image, like: torch.Tensor) -> torch.Tensor:
    """A PIL image → (C, H, W) in [-1, 1] with the dtype of ``like`` (0 → −1, 255 → 1)."""
    array = np.asarray(image, dtype=np.float32)
    array = array[..., None] if array.ndim == 2 else array
    return (torch.from_numpy(array.copy()).permute(2, 0, 1) / 127.5 - 1).to(like.dtype)


class JPEG(PairTransform):
    """``image`` after a JPEG round trip at ``quality`` (1–95) with PIL's encoder (libjpeg; 4:2:0 chroma
    subsampling for colour images, PIL's default), written to ``key``; no randomness."""

    def __init__(self, quality: int, key: str = "jpeg"):
        if not isinstance(quality, int) or not 1 <= quality <= 95:
            raise UserError(f"JPEG quality must be an integer in [1, 95], got {quality!r}")
        self.quality = quality
        self.keys = (key,)

    def encode(self, image: torch.Tensor) -> bytes:
        """The JPEG file of a (C, H, W) image in [-1, 1]."""
        buffer = io.BytesIO()
        to_pil(image).save(buffer, format="JPEG", quality=self.quality)
        return buffer.getvalue()

    def __call__(self, sample: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        image = sample["image"]
        with Image.open(io.BytesIO(self.encode(image))) as decoded:
            return {self.keys[0]: from_pil(decoded, image)}


class Blur(PairTransform):
    """``image`` blurred by a Gaussian of standard deviation ``sigma`` pixels (kernel 2⌈3σ⌉ + 1, reflected
    borders), written to ``key``; no randomness."""

    def __init__(self, sigma: float, key: str = "blurred"):
        if not sigma > 0:
            raise UserError(f"Blur sigma must be positive, got {sigma!r}")
        self.sigma = float(sigma)
        self.keys = (key,)

    def __call__(self, sample: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        size = 2 * math.ceil(3 * self.sigma) + 1
        return {self.keys[0]: TF.gaussian_blur(sample["image"][None], [size, size], [self.sigma, self.sigma])[0]}


class Quantize(PairTransform):
    """``image`` with each channel rounded to ``levels`` evenly spaced values of [-1, 1] (colour / level
    quantisation; ``levels=2`` is a binary image), written to ``key``; no randomness."""

    def __init__(self, levels: int, key: str = "quantized"):
        if not isinstance(levels, int) or levels < 2:
            raise UserError(f"Quantize levels must be an integer >= 2, got {levels!r}")
        self.levels = levels
        self.keys = (key,)

    def __call__(self, sample: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        steps = self.levels - 1
        return {self.keys[0]: ((sample["image"].clamp(-1, 1) + 1) / 2 * steps).round() / steps * 2 - 1}


class OneOf(PairTransform):
    """One degradation per item, drawn uniformly among ``choices`` (named pair configs) from the item's generator:
    the input of Palette's multi-task model (Saharia et al. 2022: one model for inpainting, JPEG restoration …).
    Writes the chosen transform's degraded image to ``key`` and the known-pixel mask to ``mask_key`` (a
    :class:`Mask`'s mask, 1 = known; all ones for a degradation without missing pixels), so every item carries the
    same keys whatever its task."""

    def __init__(self, choices: Mapping[str, Any], key: str = "source", mask_key: str = "mask"):
        if not choices:
            raise UserError("OneOf needs at least one choice (a named pair config)")
        self.choices = {name: build_pair(config) for name, config in choices.items()}
        self.keys = (key, mask_key)

    def check(self, image_shape: ImageShape) -> None:
        for name, choice in self.choices.items():
            try:
                choice.check(image_shape)
            except UserError as error:
                raise UserError(f"choice '{name}': {error}") from None

    def __call__(self, sample: dict[str, Any], generator: torch.Generator) -> dict[str, torch.Tensor]:
        transforms = list(self.choices.values())
        transform = transforms[int(torch.randint(len(transforms), (), generator=generator))]
        out = transform(sample, generator)
        image = sample["image"]
        mask = out[transform.keys[0]] if isinstance(transform, Mask) else torch.ones_like(image[:1])
        return {self.keys[0]: out[transform.degraded_key], self.keys[1]: mask}


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
                        "lit_diffusion.datamodules.pairs.LowResolution, .Mask, .Grayscale, .JPEG, .Blur, .Quantize or "
                        ".OneOf")
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
