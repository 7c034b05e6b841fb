"""Configurable UNet noise-prediction network.

The layout is the DDPM UNet (Ho et al. 2020, ``diffusion_tf/models/unet.py``): per resolution level
``num_res_blocks`` residual blocks on the way down and ``num_res_blocks + 1`` on the way up, each up block
consuming one skip connection by concatenation; a res+attention+res middle block; zero-initialised
output layers.  Options from later work: multi-head attention and BigGAN-style resampling residual
blocks (Dhariwal & Nichol 2021, ADM), Gaussian Fourier time features and 1/sqrt(2) skip rescaling
(Song et al. 2021, NCSN++ / DDPM++).

Conditioning arrives by the three routes of Stability AI's generative-models (sgm,
``sgm/modules/diffusionmodules/wrappers.py`` and ``openaimodel.py``), each off unless configured:
``vector`` is projected and added to the noise embedding (ADM's class embedding, so class labels and the
null label of classifier-free guidance come from a conditioner's class embedder); ``concat`` is stacked
onto the input channels; ``crossattn`` is a token sequence that LDM spatial transformers attend to
(Rombach et al. 2022, §3.3).  A UNet with no route configured has exactly the modules and the computation
of the unconditional network.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from lit_diffusion.networks.attention import TransformerBlock
from lit_diffusion.networks.embeddings import GaussianFourierEmbedding, SinusoidalEmbedding


def group_norm(channels: int, num_groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest number of groups that divides ``channels``, is at most ``num_groups``
    and leaves at least 4 channels per group (as DDPM's 32 groups of 128 channels, Ho et al. 2020).

    With one channel per group GroupNorm would erase the per-channel shift by which residual blocks add
    the embedding, so small nets would ignore the noise level and the ``vector`` conditioning.
    """
    groups = max(g for g in range(1, max(1, min(num_groups, channels // 4)) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero the parameters of ``module`` so the branch it ends starts as the identity (Ho et al. 2020)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _resample(x: Tensor, direction: str | None) -> Tensor:
    if direction == "down":
        return F.avg_pool2d(x, 2)
    if direction == "up":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return x


class ResBlock(nn.Module):
    """DDPM residual block (Ho et al. 2020): GroupNorm, SiLU, conv3x3, + projected embedding, GroupNorm,
    SiLU, dropout, zero-initialised conv3x3, with a 1x1 skip conv when the channel count changes.

    ``resample`` ("up"/"down") resamples both branches after the first activation, BigGAN style
    (Dhariwal & Nichol 2021); ``skip_rescale`` divides the sum by sqrt(2) (Song et al. 2021).
    """

    def __init__(self, in_ch: int, out_ch: int, *, emb_ch: int, dropout: float, num_groups: int,
                 skip_rescale: bool, resample: str | None = None):
        super().__init__()
        self.norm1 = group_norm(in_ch, num_groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_ch, out_ch)
        self.norm2 = group_norm(out_ch, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)
        self.resample = resample
        self.out_scale = 2**-0.5 if skip_rescale else 1.0

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = F.silu(self.norm1(x))
        h, x = _resample(h, self.resample), _resample(x, self.resample)
        h = self.conv1(h) + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) + h) * self.out_scale


class AttentionBlock(nn.Module):
    """Residual self-attention over the H*W positions (Ho et al. 2020), with ``num_heads`` heads
    (Dhariwal & Nichol 2021) and optional 1/sqrt(2) rescaling of the sum (Song et al. 2021)."""

    def __init__(self, channels: int, *, num_heads: int, num_groups: int, skip_rescale: bool):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the {channels} channels of every attention block")
        self.num_heads = num_heads
        self.norm = group_norm(channels, num_groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))
        self.out_scale = 2**-0.5 if skip_rescale else 1.0

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        b, c, height, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, height * width)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, H*W, C // heads)
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(-1, -2).reshape(b, c, height, width)
        return (x + self.proj(h)) * self.out_scale


class SpatialTransformer(nn.Module):
    """LDM's ``SpatialTransformer`` (Rombach et al. 2022, §3.3 and App.): GroupNorm, 1x1 ``proj_in``, ``depth``
    transformer blocks (:class:`~lit_diffusion.networks.attention.TransformerBlock`) over the H*W positions,
    cross-attending to a ``context_dim``-channel token sequence, zero-initialised 1x1 ``proj_out`` and a
    residual sum (rescaled by 1/sqrt(2) with ``skip_rescale``, as in :class:`AttentionBlock`)."""

    def __init__(self, channels: int, *, context_dim: int, depth: int, num_heads: int, num_groups: int,
                 skip_rescale: bool):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the {channels} channels of every attention block")
        self.norm = group_norm(channels, num_groups)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(TransformerBlock(channels, context_dim, num_heads)
                                                for _ in range(depth))
        self.proj_out = zero_init(nn.Conv2d(channels, channels, 1))
        self.out_scale = 2**-0.5 if skip_rescale else 1.0

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        b, c, height, width = x.shape
        h = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # (B, H*W, C)
        for block in self.transformer_blocks:
            h = block(h, context, context_mask)
        h = h.transpose(1, 2).reshape(b, c, height, width)
        return (x + self.proj_out(h)) * self.out_scale


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (Ho et al. 2020)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 convolution (Ho et al. 2020)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(_resample(x, "up"))


class EmbedSequential(nn.Sequential):
    """Sequential container passing the embedding to its blocks, and instead the cross-attention context
    and its padding mask to :class:`SpatialTransformer` blocks (LDM's ``TimestepEmbedSequential``)."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor | None = None,
                context_mask: Tensor | None = None) -> Tensor:
        for block in self:
            x = block(x, context, context_mask) if isinstance(block, SpatialTransformer) else block(x, emb)
        return x


def _call(block: nn.Module, *args: Tensor | None) -> Tensor:
    return block(*args)


# cond key -> the constructor argument that configures its route
_ROUTE_ARGS = {"vector": "vector_dim", "concat": "concat_channels", "crossattn": "context_dim",
               "crossattn_mask": "context_dim"}


def _check_shape(key: str, tensor: Tensor, expected: tuple[int | None, ...]) -> None:
    """Raise unless ``tensor`` has shape ``expected``, where None matches any size."""
    if tensor.ndim != len(expected) or any(e is not None and e != n for n, e in zip(tensor.shape, expected)):
        want = ", ".join("L" if e is None else str(e) for e in expected)
        raise ValueError(f"cond[{key!r}] must have shape ({want}), got {tuple(tensor.shape)}")


class UNet(nn.Module):
    """DDPM/ADM-style UNet predicting a tensor shaped like ``x`` (with ``out_channels`` channels).

    Args:
        in_channels: image channels.
        out_channels: output channels; defaults to ``in_channels`` (pass ``2 * in_channels`` to also
            predict a variance).
        image_size: input height and width; must be divisible by ``2 ** (len(channel_mult) - 1)``.
        base_channels: channels at the first level; the embedding has ``4 * base_channels``.
        channel_mult: one multiplier of ``base_channels`` per resolution level.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: feature-map sizes (e.g. 16 for 16x16) whose residual blocks are followed
            by self-attention (or a spatial transformer with ``context_dim``).  The middle block always
            has attention.
        dropout: dropout rate inside residual blocks.
        num_heads: attention heads.
        num_head_channels: channels per head instead (heads = block channels / this; ADM's and LDM's
            ``num_head_channels``, e.g. 32 for LDM's CelebA-HQ model); overrides ``num_heads``.
        time_embedding: "sinusoidal" (Ho et al. 2020) or "fourier" (Song et al. 2021).
        fourier_scale: standard deviation of the random Fourier frequencies.
        resblock_updown: resample with residual blocks (Dhariwal & Nichol 2021) instead of a strided
            conv / nearest-upsample + conv.
        skip_rescale: scale residual sums by 1/sqrt(2) (Song et al. 2021).
        num_groups: maximum GroupNorm groups (fewer for small channel counts, see :func:`group_norm`).
        vector_dim: if set, ``cond["vector"]`` of shape (B, vector_dim) is projected by ``vector_proj``
            and added to the noise embedding (ADM's class embedding; sgm's ``vector`` route).
        concat_channels: if positive, ``cond["concat"]`` of shape (B, concat_channels, H, W) is
            concatenated to ``x`` along channels before ``conv_in`` (sgm's ``concat`` route).
        context_dim: if set, every attention block is a :class:`SpatialTransformer` cross-attending to
            ``cond["crossattn"]`` of shape (B, L, context_dim), with an optional (B, L) boolean
            ``cond["crossattn_mask"]``, False at padding tokens (sgm's ``crossattn`` route).
        transformer_depth: transformer blocks per spatial transformer (with ``context_dim``).
        checkpoint: activation checkpointing: while training with gradients, every down/middle/up block (its
            residual and attention blocks) keeps only its inputs and recomputes its activations in the backward
            pass (Chen et al. 2016; ADM's ``use_checkpoint``): less memory for one more forward pass; the same
            loss and gradients.
    """

    def __init__(self, in_channels: int = 3, out_channels: int | None = None, image_size: int = 32,
                 base_channels: int = 128, channel_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] = (16,), dropout: float = 0.0, num_heads: int = 1,
                 num_head_channels: int | None = None,
                 time_embedding: str = "sinusoidal", fourier_scale: float = 16.0, resblock_updown: bool = False,
                 skip_rescale: bool = False, num_groups: int = 32, vector_dim: int | None = None,
                 concat_channels: int = 0, context_dim: int | None = None, transformer_depth: int = 1,
                 checkpoint: bool = False):
        super().__init__()
        channel_mult, attention_resolutions = tuple(channel_mult), tuple(attention_resolutions)
        num_levels = len(channel_mult)
        factor = 2 ** (num_levels - 1)
        if image_size % factor:
            raise ValueError(
                f"image_size={image_size} must be divisible by 2**(len(channel_mult)-1) = {factor} so that each "
                f"of the {num_levels - 1} downsamplings halves an even size; use fewer levels in channel_mult "
                f"(now {list(channel_mult)}) or another image size")
        resolutions = [image_size // 2**level for level in range(num_levels)]
        if missing := sorted(set(attention_resolutions) - set(resolutions)):
            warnings.warn(f"attention_resolutions {missing} match no level of this UNet (resolutions "
                          f"{resolutions}); no attention is added there", stacklevel=2)
        if time_embedding == "sinusoidal":
            noise_embed = SinusoidalEmbedding(base_channels)
        elif time_embedding == "fourier":
            noise_embed = GaussianFourierEmbedding(base_channels, fourier_scale)
        else:
            raise ValueError(f"time_embedding must be 'sinusoidal' or 'fourier', got {time_embedding!r}")

        emb_ch = 4 * base_channels
        self.in_channels, self.out_channels = in_channels, out_channels or in_channels
        self.image_size = image_size
        self.checkpoint = checkpoint
        self.vector_dim, self.concat_channels, self.context_dim = vector_dim, concat_channels, context_dim
        self.noise_embed = noise_embed
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.vector_proj = nn.Linear(vector_dim, emb_ch) if vector_dim is not None else None

        res_block = partial(ResBlock, emb_ch=emb_ch, dropout=dropout, num_groups=num_groups,
                            skip_rescale=skip_rescale)
        if context_dim is None:
            block = partial(AttentionBlock, num_groups=num_groups, skip_rescale=skip_rescale)
        else:
            block = partial(SpatialTransformer, context_dim=context_dim, depth=transformer_depth,
                            num_groups=num_groups, skip_rescale=skip_rescale)

        def attention(channels: int) -> nn.Module:
            if num_head_channels and channels % num_head_channels:
                raise ValueError(f"num_head_channels={num_head_channels} must divide the {channels} channels of "
                                 f"every attention block (base_channels={base_channels} × channel_mult); set "
                                 f"num_head_channels to a divisor of {channels} or raise base_channels")
            heads = channels // num_head_channels if num_head_channels else num_heads
            return block(channels, num_heads=heads)

        self.conv_in = nn.Conv2d(in_channels + concat_channels, base_channels, 3, padding=1)
        ch, skip_chs = base_channels, [base_channels]
        self.down = nn.ModuleList()  # each entry's output is one skip connection
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                blocks = [res_block(ch, base_channels * mult)]
                ch = base_channels * mult
                if resolutions[level] in attention_resolutions:
                    blocks.append(attention(ch))
                self.down.append(EmbedSequential(*blocks))
                skip_chs.append(ch)
            if level != num_levels - 1:
                self.down.append(EmbedSequential(res_block(ch, ch, resample="down") if resblock_updown
                                                 else Downsample(ch)))
                skip_chs.append(ch)

        self.mid = EmbedSequential(res_block(ch, ch), attention(ch), res_block(ch, ch))

        self.up = nn.ModuleList()  # each entry consumes one skip connection
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                blocks = [res_block(ch + skip_chs.pop(), base_channels * mult)]
                ch = base_channels * mult
                if resolutions[level] in attention_resolutions:
                    blocks.append(attention(ch))
                if level != 0 and i == num_res_blocks:
                    blocks.append(res_block(ch, ch, resample="up") if resblock_updown else Upsample(ch))
                self.up.append(EmbedSequential(*blocks))

        self.out = nn.Sequential(group_norm(ch, num_groups), nn.SiLU(),
                                 zero_init(nn.Conv2d(ch, self.out_channels, 3, padding=1)))

    def forward(self, x: Tensor, noise_cond: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        """Args:
            x: (B, C, H, W) noisy images.
            noise_cond: (B,) real noise-level input (or a scalar, broadcast to the batch).
            cond: the inputs of the configured routes: ``"vector"``, ``"concat"``, ``"crossattn"`` and
                optionally ``"crossattn_mask"`` (see the class docstring); None when none is configured.
        """
        batch = x.shape[0]
        noise_cond = torch.as_tensor(noise_cond, device=x.device)
        if noise_cond.numel() == 1:
            noise_cond = noise_cond.reshape(1).expand(batch)
        elif noise_cond.numel() == batch:
            noise_cond = noise_cond.reshape(batch)
        else:
            raise ValueError(f"noise_cond must be a scalar or have shape ({batch},), got {tuple(noise_cond.shape)}")
        if cond is None:
            cond = {}
        elif not isinstance(cond, Mapping):
            raise TypeError(f"cond must be a mapping of route names to tensors, got {type(cond).__name__}; class "
                            "labels reach the UNet as cond['vector'], from a conditioner's class embedder")
        self._check_cond(x, cond)
        emb = self.time_mlp(self.noise_embed(noise_cond).to(x.dtype))
        if "vector" in cond:
            emb = emb + self.vector_proj(cond["vector"].to(x.dtype))
        if "concat" in cond:
            x = torch.cat([x, cond["concat"].to(x.dtype)], dim=1)
        context = cond["crossattn"].to(x.dtype) if "crossattn" in cond else None
        context_mask = cond.get("crossattn_mask")

        checkpointed = self.checkpoint and self.training and torch.is_grad_enabled()
        run = (partial(torch.utils.checkpoint.checkpoint, use_reentrant=False, context_fn=self.checkpoint_contexts)
               if checkpointed else _call)
        hs = [self.conv_in(x)]
        for block in self.down:
            hs.append(run(block, hs[-1], emb, context, context_mask))
        h = run(self.mid, hs[-1], emb, context, context_mask)
        for block in self.up:
            h = run(block, torch.cat([h, hs.pop()], dim=1), emb, context, context_mask)
        return self.out(h)

    def checkpoint_contexts(self) -> tuple[AbstractContextManager, AbstractContextManager]:
        """The contexts a checkpointed block runs in: its forward pass and its recomputation during backward
        (``torch.utils.checkpoint``'s ``context_fn``); none for the 2-D UNet."""
        return nullcontext(), nullcontext()

    def _check_cond(self, x: Tensor, cond: Mapping[str, Tensor]) -> None:
        """Raise a ValueError naming the fix unless ``cond`` holds exactly the configured routes' inputs
        (the mask optional) with the expected shapes."""
        if unknown := sorted(set(cond) - set(_ROUTE_ARGS)):
            raise ValueError(f"unknown cond keys {unknown}; the UNet's routes take {list(_ROUTE_ARGS)}")
        for key, arg in _ROUTE_ARGS.items():
            value = getattr(self, arg)
            if key in cond and not value:
                raise ValueError(f"cond[{key!r}] was given to a UNet built without {arg}; set {arg} in the "
                                 f"network config to use the {key.removesuffix('_mask')} route")
            if value and key not in cond and key != "crossattn_mask":
                raise ValueError(f"cond[{key!r}] is missing; this UNet was built with {arg}={value}, so every "
                                 f"call needs it (unset {arg} in the network config for a network without it)")
        batch, _, height, width = x.shape
        if "vector" in cond:
            _check_shape("vector", cond["vector"], (batch, self.vector_dim))
        if "concat" in cond:
            _check_shape("concat", cond["concat"], (batch, self.concat_channels, height, width))
        if "crossattn" in cond:
            _check_shape("crossattn", cond["crossattn"], (batch, None, self.context_dim))
        if "crossattn_mask" in cond:
            mask = cond["crossattn_mask"]
            _check_shape("crossattn_mask", mask, (batch, cond["crossattn"].shape[1]))
            if mask.dtype != torch.bool:
                raise ValueError(f"cond['crossattn_mask'] must be boolean (True at real tokens), got {mask.dtype}")
