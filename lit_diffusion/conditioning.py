"""Conditioning as a dict: named embedders turn a batch's conditions into the network's three routes.

A batch is ``{"image": x_0, <key>: <condition>, …}``.  A :class:`Conditioner` holds one embedder per
condition (sgm's ``GeneralConditioner``, Rombach et al. 2022 §3.3); each embedder reads its ``input_key``,
drops its condition to a *null* embedding with its own probability during training (classifier-free
guidance trains the unconditional model this way, Ho & Salimans 2021 Alg. 1), and feeds one route:

* ``vector``   (B, D): added to the noise embedding (class labels; ADM's ``label_emb``);
* ``concat``   (B, C, H, W): concatenated to the input channels (SR3's low-resolution image, Palette's source
  image, an inpainting mask), resized to the data size;
* ``crossattn`` (B, L, D) with a padding mask (B, L): attended to by the UNet's transformer blocks (LDM's
  text conditioning: :class:`~lit_diffusion.text.TextEmbedder` encodes captions and returns its own mask);
* ``frames`` (B, 1) bool: which samples of a video batch are independent images (joint image/video training).

A concat condition may hold known values of the sample itself (MCVD's given frames): the model keeps them in its
samples (:meth:`Conditioner.known`, :func:`keep_known`).

Several embedders on one route are concatenated (vectors and channels along dim 1, token sequences along
the sequence dim).  The conditioner's trainable embedders (the class table) are trained and averaged with
the network; frozen ones (pretrained encoders) are wrapped in :class:`~lit_diffusion.frozen.Frozen`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_diffusion.config import safe_instantiate
from lit_diffusion.errors import UserError

ROUTES = ("vector", "concat", "crossattn", "frames")
NETWORK_ARGUMENT = {"vector": "vector_dim", "concat": "concat_channels", "crossattn": "context_dim",
                    "frames": "independent_frames"}
"""The network constructor argument each route sets (see :class:`~lit_diffusion.networks.UNet`)."""


class Embedder(nn.Module):
    """One named condition: reads ``batch[input_key]``, embeds it for ``route``, dropped with ``dropout``.

    Subclasses set :attr:`route` and :attr:`dim` (vector/context width, or concat channels) and implement
    :meth:`forward`, which embeds the condition with the samples of ``drop`` replaced by the null condition (a
    ``crossattn`` embedder may return its tokens with their padding mask).  A condition is a tensor, or a list
    (captions) whose length is the batch size.
    """

    route: str
    dim: int

    def __init__(self, input_key: str, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout <= 1.0:
            raise UserError(f"conditioner dropout for '{input_key}' must lie in [0, 1], got {dropout}")
        self.input_key, self.dropout = input_key, dropout

    def forward(self, value: Tensor, drop: Tensor, image_size: int) -> Tensor | tuple[Tensor, Tensor]:
        raise NotImplementedError

    def known(self, value: Tensor) -> tuple[Tensor, Tensor] | None:
        """Known values of the sample itself and their mask (1 = known), which sampling keeps; None by default."""
        return None

    def fit(self, captions: Callable[[], Sequence[str] | None], broadcast: Callable | None = None) -> None:
        """Fit what the embedder learns from the training data before training (nothing by default); ``captions()``
        gives the training captions, ``broadcast(obj)`` rank 0's object in every process."""

    def spec(self, config: dict) -> dict:
        """The config that rebuilds this embedder from a checkpoint (by default the one it was built from)."""
        return config


class ClassEmbedder(Embedder):
    """A learned vector per class plus one for the null label (index ``num_classes``; Ho & Salimans 2021)."""

    route = "vector"

    def __init__(self, num_classes: int, dim: int = 64, input_key: str = "label", dropout: float = 0.0):
        super().__init__(input_key, dropout)
        self.num_classes, self.dim = num_classes, dim
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, value: Tensor, drop: Tensor, image_size: int) -> Tensor:
        labels = value.long()
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise UserError(f"class labels must lie in [0, {self.num_classes - 1}], got {labels.min().item()}…"
                            f"{labels.max().item()}; set the conditioner's num_classes to the dataset's")
        return self.table(labels.masked_fill(drop, self.num_classes))


class ConcatEmbedder(Embedder):
    """An image-like condition (low-resolution image, source image, mask) resized to the data size and
    concatenated to the network input; the null condition is zeros (Saharia et al. 2022, SR3/Palette).  A video
    condition (B, C, T, H, W) is resized frame by frame."""

    route = "concat"

    def __init__(self, channels: int, input_key: str, dropout: float = 0.0, mode: str = "bicubic"):
        super().__init__(input_key, dropout)
        self.dim, self.mode = channels, mode

    def forward(self, value: Tensor, drop: Tensor, image_size: int) -> Tensor:
        if value.dim() not in (4, 5) or value.shape[1] != self.dim:
            raise UserError(f"condition '{self.input_key}' must be (B, {self.dim}, H, W) or a video (B, {self.dim}, T, "
                            f"H, W), got {tuple(value.shape)}; set its channels in the conditioner config")
        if value.shape[-1] != image_size or value.shape[-2] != image_size:
            align = {} if self.mode == "nearest" else {"align_corners": False}
            frames = value.float().flatten(1, -3)  # a video's frames as channels: resized one by one
            frames = F.interpolate(frames, size=(image_size, image_size), mode=self.mode, **align)
            value = frames.reshape(*value.shape[:-2], image_size, image_size)
        return value.masked_fill(drop.reshape(-1, *[1] * (value.dim() - 1)), 0.0)


class KnownFramesEmbedder(ConcatEmbedder):
    """MCVD's masked conditioning (Voleti et al. 2022, §3): ``value`` (B, C + 1, T, H, W) holds the given frames
    (0 on the frames to generate) and, as last channel, the per-frame mask (1 given, 0 to generate), as written by
    :class:`~lit_diffusion.datamodules.frame_masks.FrameMask`.  It reaches the network on the concat route; the
    null condition (dropout) is all zeros, i.e. no frame given: unconditional generation.  :meth:`known` tells the
    model to keep the given frames in its samples.

    Args:
        channels: C, the video's channels (the embedder feeds C + 1).
    """

    def __init__(self, channels: int, input_key: str = "known_frames", dropout: float = 0.0):
        super().__init__(channels + 1, input_key, dropout, mode="nearest")

    def known(self, value: Tensor) -> tuple[Tensor, Tensor]:
        if value.dim() != 5 or value.shape[1] != self.dim:
            raise UserError(f"condition '{self.input_key}' must be given frames and their mask (B, {self.dim}, T, H, W), "
                            f"got {tuple(value.shape)}")
        return value[:, :-1], value[:, -1:]


class IndependentFramesEmbedder(Embedder):
    """Joint image/video training (Ho et al. 2022, "Video Diffusion Models", §3): ``value`` (B,) is True for a
    sample whose frames are independent images; the space-time network skips temporal attention for it (the
    ``frames`` route, :class:`~lit_diffusion.networks.video_unet.VideoUNet`).  Never dropped."""

    route = "frames"
    dim = 1

    def __init__(self, input_key: str = "independent"):
        super().__init__(input_key, 0.0)

    def forward(self, value: Tensor, drop: Tensor, image_size: int) -> Tensor:
        return value.bool().reshape(-1, 1)


class ContextEmbedder(Embedder):
    """Token embeddings (B, L, dim) for cross-attention, with an optional padding mask in ``mask_key``.

    The null context is all-zero tokens (mask kept), so a dropped sample attends to zeros.
    """

    route = "crossattn"

    def __init__(self, dim: int, input_key: str = "context", mask_key: str | None = None, dropout: float = 0.0):
        super().__init__(input_key, dropout)
        self.dim, self.mask_key = dim, mask_key

    def forward(self, value: Tensor, drop: Tensor, image_size: int) -> Tensor:
        if value.dim() != 3 or value.shape[-1] != self.dim:
            raise UserError(f"condition '{self.input_key}' must be token embeddings (B, L, {self.dim}), "
                            f"got {tuple(value.shape)}")
        return value.masked_fill(drop[:, None, None], 0.0)


class Conditioner(nn.Module):
    """Named embedders → ``{"vector": …, "concat": …, "crossattn": …, "crossattn_mask": …}``.

    Args:
        embedders: name → embedder config (or module); empty or None for an unconditional model.
        image_size: the data's height and width (concat conditions are resized to it).
    """

    def __init__(self, embedders: Mapping[str, dict | Embedder] | None = None, image_size: int = 32):
        super().__init__()
        built = {name: e if isinstance(e, nn.Module) else safe_instantiate(e) for name, e in (embedders or {}).items()}
        self.embedders = nn.ModuleDict(built)
        self.image_size = image_size
        dims = {}
        for name, embedder in self.embedders.items():
            if embedder.route == "crossattn" and dims.get("crossattn", embedder.dim) != embedder.dim:
                raise UserError(f"cross-attention embedders must share one width; '{name}' has {embedder.dim}, "
                                f"another {dims['crossattn']}")
            dims[embedder.route] = embedder.dim if embedder.route == "crossattn" else dims.get(embedder.route, 0) + embedder.dim
        self.route_dims = dims

    @property
    def device(self) -> torch.device:
        """Where the embedders' weights are (conditions that are not tensors, such as captions, go there)."""
        return next(self.parameters(), torch.empty(0)).device

    @property
    def input_keys(self) -> list[str]:
        return [e.input_key for e in self.embedders.values()]

    @property
    def droppable(self) -> list[str]:
        """Names of the embedders trained with dropout: what guidance can drop to form the unconditional model."""
        return [name for name, e in self.embedders.items() if e.dropout > 0]

    def fit(self, captions: Callable[[], Sequence[str] | None], broadcast: Callable | None = None) -> None:
        """Fit every embedder to the training data (see :meth:`Embedder.fit`)."""
        for embedder in self.embedders.values():
            embedder.fit(captions, broadcast)

    def spec(self, config: Mapping) -> dict:
        """The conditioner config ``config`` with each embedder's config as it rebuilds from a checkpoint."""
        embedders = config.get("embedders") or {}
        return {**config, "embedders": {name: self.embedders[name].spec(c) for name, c in embedders.items()}}

    def network_kwargs(self) -> dict[str, int]:
        """The network constructor arguments that open the routes this conditioner feeds."""
        return {NETWORK_ARGUMENT[route]: dim for route, dim in self.route_dims.items()}

    def known(self, inputs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor] | None:
        """Known values of the samples and their mask (1 = known) from the embedders that carry some
        (:class:`KnownFramesEmbedder`), or None."""
        found = [k for e in self.embedders.values()
                 if e.input_key in inputs and (k := e.known(inputs[e.input_key])) is not None]
        if len(found) > 1:
            raise UserError("only one conditioner embedder may carry known values of the sample")
        return found[0] if found else None

    def forward(self, inputs: Mapping[str, Tensor], *, train_dropout: bool = False,
                drop: Collection[str] = ()) -> dict[str, Tensor]:
        """Embed the conditions of ``inputs``.  ``train_dropout``: drop each key with its own probability per
        sample; ``drop``: names of embedders replaced by their null condition for every sample."""
        if not self.embedders:
            return {}
        parts: dict[str, list[Tensor]] = {}
        masks: list[Tensor] = []
        for name, embedder in self.embedders.items():
            if embedder.input_key not in inputs:
                raise UserError(f"the model is conditioned on '{embedder.input_key}' (conditioner embedder "
                                f"'{name}'), but the batch has only {sorted(inputs)}; pass it (class labels: "
                                "class_labels=[...], captions: prompt=\"...\" or prompts=FILE; images of a dataset: "
                                "python -m lit_diffusion.evaluate task=sr or task=palette) or use an unconditional model")
            value = inputs[embedder.input_key]
            batch, device = len(value), value.device if isinstance(value, Tensor) else self.device
            if name in drop:
                dropped = torch.ones(batch, dtype=torch.bool, device=device)
            elif train_dropout and embedder.dropout > 0:
                dropped = torch.rand(batch, device=device) < embedder.dropout
            else:
                dropped = torch.zeros(batch, dtype=torch.bool, device=device)
            embedded = embedder(value, dropped, self.image_size)
            if isinstance(embedded, tuple):  # tokens with their own padding mask
                embedded, mask = embedded
                masks.append(mask)
            elif embedder.route == "crossattn":
                mask_key = getattr(embedder, "mask_key", None)
                masks.append(inputs[mask_key].bool() if mask_key else
                             torch.ones(value.shape[:2], dtype=torch.bool, device=value.device))
            parts.setdefault(embedder.route, []).append(embedded)
        out = {route: torch.cat(tensors, dim=1) for route, tensors in parts.items()}
        if masks:
            out["crossattn_mask"] = torch.cat(masks, dim=1)
        return out


def keep_known(denoiser, values: Tensor, mask: Tensor):
    """The denoiser with x̂_0 replaced by the known ``values`` where ``mask`` is 1 (a learned variance passes
    through): the exact posterior of pixels that are given, so every sampler's trajectory agrees with them."""

    def denoise(x: Tensor, sigma: Tensor):
        out = denoiser(x, sigma)
        denoised, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        kept = torch.where(mask.bool(), values.to(denoised.dtype), denoised)
        return (kept, *rest) if rest else kept

    return denoise


def concat_batches(first: Mapping[str, Tensor], second: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Two embedded conditions as one batch of 2B (classifier-free guidance's single forward pass)."""
    return {key: torch.cat([first[key], second[key]]) for key in first}


def select(inputs: Mapping[str, Tensor], index: slice | Tensor) -> dict[str, Tensor]:
    """The conditions of some samples of a batch."""
    return {key: value[index] for key, value in inputs.items()}
