"""Factorized space-time UNet of Video Diffusion Models (Ho et al. 2022, §3).

Ho et al. extend the 2-D diffusion UNet to videos (B, C, T, H, W) by factorizing over space and time: every
convolution is spatial only (a 1×3×3 "space-only 3-D convolution"), spatial attention attends within each frame,
and after each spatial attention block a temporal attention block attends across the T frames at every spatial
position, with relative position embeddings for the frame offsets.  Here that is the 2-D
:class:`~lit_diffusion.networks.unet.UNet` itself run on the B·T frames (its blocks, weights and conditioning
routes unchanged), plus a :class:`TemporalAttention` appended to each of its blocks that has spatial attention.

Joint image/video training (Ho et al. §3: "masking the temporal attention so that frames are independent"): a
sample whose frames are independent images skips every temporal attention block (the ``frames`` route,
:class:`~lit_diffusion.conditioning.IndependentFramesEmbedder`), so for it — and for any one-frame input — the
network is exactly the 2-D UNet applied per frame: the 2-D UNet's state dict loads into a :class:`VideoUNet`
(``strict=False``; only the temporal blocks are new).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_diffusion.networks.unet import AttentionBlock, SpatialTransformer, UNet, group_norm, zero_init


MAX_ATTENTION_BATCH = 65535
"""Most (sequences × heads) per attention call.  Temporal attention runs one sequence per video and pixel
(B·H·W of them); beyond 65,535 (CUDA's grid limit) PyTorch's memory-efficient attention fails in the backward pass
with a broadcast bias (seen on an H200 with video_ucf101: 16 videos × 32² pixels × 4 heads), so larger batches are
attended in chunks: the same result."""


@dataclass
class FrameLayout:
    """How the B·T frames that the 2-D blocks see form videos, for the duration of one :meth:`VideoUNet.forward`:
    ``frames`` per video and ``video`` (B,) bool, False for samples of independent images."""

    frames: int = 1
    video: Tensor | None = None


def fold_frames(x: Tensor) -> Tensor:
    """(B, C, T, H, W) → (B·T, C, H, W), frames of a video consecutive."""
    return x.transpose(1, 2).flatten(0, 1)


def unfold_frames(x: Tensor, frames: int) -> Tensor:
    """(B·T, C, H, W) → (B, C, T, H, W), the inverse of :func:`fold_frames`."""
    return x.unflatten(0, (-1, frames)).transpose(1, 2)


class TemporalAttention(nn.Module):
    """Residual multi-head self-attention across the frames at each spatial position (Ho et al. 2022, §3), with a
    learned bias per head and frame offset, the relative position representation of Shaw et al. (2018) in its
    bias form; GroupNorm per frame before, a zero-initialised output projection after (so a new block starts as
    the identity).  Samples whose ``layout.video`` is False, and single frames, pass unchanged."""

    def __init__(self, channels: int, *, num_heads: int, num_groups: int, max_frames: int, layout: FrameLayout):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the {channels} channels of every attention block")
        self.num_heads, self.max_frames, self.layout = num_heads, max_frames, layout
        self.norm = group_norm(channels, num_groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))
        self.relative_bias = nn.Parameter(torch.zeros(num_heads, 2 * max_frames - 1))

    def position_bias(self, frames: int) -> Tensor:
        """(heads, T, T): the bias of query frame i attending to key frame j, a function of j − i."""
        index = torch.arange(frames, device=self.relative_bias.device)
        return self.relative_bias[:, index[None, :] - index[:, None] + self.max_frames - 1]

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        frames, video = self.layout.frames, self.layout.video
        if frames == 1 or not bool(video.any()):
            return x
        bt, c, height, width = x.shape
        h = self.norm(x).unflatten(0, (-1, frames)).permute(0, 3, 4, 1, 2).flatten(0, 2)  # (B·H·W, T, C)
        q, k, v = self.qkv(h).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)  # (B·H·W, heads, T, ·)
        bias, chunk = self.position_bias(frames).to(q.dtype), max(1, MAX_ATTENTION_BATCH // self.num_heads)
        h = torch.cat([F.scaled_dot_product_attention(q[i:i + chunk], k[i:i + chunk], v[i:i + chunk], attn_mask=bias)
                       for i in range(0, q.shape[0], chunk)])
        h = self.proj(h.transpose(1, 2).flatten(2))  # (B·H·W, T, C)
        h = h.unflatten(0, (-1, height, width)).permute(0, 3, 4, 1, 2).flatten(0, 1)  # (B·T, C, H, W)
        return x + h * video.repeat_interleave(frames).to(h.dtype)[:, None, None, None]


def _attention_heads(block: nn.Module) -> int:
    if isinstance(block, AttentionBlock):
        return block.num_heads
    return block.transformer_blocks[0].attn1.num_heads


class VideoUNet(UNet):
    """The factorized space-time UNet (module docstring) on videos (B, C, T, H, W).

    Args:
        max_frames: the longest video (the size of the relative position table); 1 … max_frames frames work.
        independent_frames: set to 1 (by a conditioner's :class:`~lit_diffusion.conditioning.IndependentFramesEmbedder`)
            to take ``cond["frames"]`` (B, 1) bool, True for samples of independent images (joint training).
        Others: as :class:`~lit_diffusion.networks.unet.UNet` (its routes take ``cond["concat"]`` as a video
        (B, C', T, H, W); vectors and token sequences apply to every frame).
    """

    def __init__(self, *args, max_frames: int = 16, independent_frames: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if max_frames < 1:
            raise ValueError(f"max_frames must be positive, got {max_frames}")
        self.max_frames, self.independent_frames = max_frames, independent_frames
        self.layout = FrameLayout()
        num_groups = kwargs.get("num_groups", 32)
        for sequence in [*self.down, self.mid, *self.up]:
            spatial = [m for m in sequence if isinstance(m, (AttentionBlock, SpatialTransformer))]
            if spatial:
                sequence.append(TemporalAttention(spatial[-1].norm.num_channels, num_heads=_attention_heads(spatial[-1]),
                                                  num_groups=num_groups, max_frames=max_frames, layout=self.layout))

    def forward(self, x: Tensor, noise_cond: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        """Args:
            x: (B, C, T, H, W) noisy videos.
            noise_cond: (B,) noise-level input (or a scalar), the same for every frame of a video.
            cond: the routes' inputs as for the UNet, ``concat`` as videos, plus ``frames`` with ``independent_frames``.
        """
        if x.dim() != 5:
            raise ValueError(f"VideoUNet takes videos (B, C, T, H, W), got shape {tuple(x.shape)}")
        batch, frames = x.shape[0], x.shape[2]
        if frames > self.max_frames:
            raise ValueError(f"videos of {frames} frames exceed max_frames={self.max_frames}; raise network.max_frames")
        cond = dict(cond or {})
        independent = cond.pop("frames", None)
        if (independent is None) != (not self.independent_frames):
            raise ValueError("cond['frames'] (independent images) must be given exactly when the VideoUNet is built "
                             "with independent_frames=1 (by an IndependentFramesEmbedder)")
        video = (torch.ones(batch, dtype=torch.bool, device=x.device) if independent is None
                 else ~independent.reshape(batch).bool())
        noise_cond = torch.as_tensor(noise_cond, device=x.device)
        if noise_cond.numel() == batch:
            noise_cond = noise_cond.reshape(batch).repeat_interleave(frames)
        per_frame = {key: fold_frames(value) if key == "concat" else value.repeat_interleave(frames, 0)
                     for key, value in cond.items()}
        with self.frame_layout(frames, video):
            out = super().forward(fold_frames(x), noise_cond, per_frame or None)
        return unfold_frames(out, frames)

    @contextmanager
    def frame_layout(self, frames: int, video: Tensor | None) -> Iterator[None]:
        """The temporal blocks see ``frames`` per video (and which samples are videos) inside this context."""
        self.layout.frames, self.layout.video = frames, video
        try:
            yield
        finally:
            self.layout.frames, self.layout.video = 1, None

    def checkpoint_contexts(self) -> tuple[AbstractContextManager, AbstractContextManager]:
        """A checkpointed block recomputes during backward, after :meth:`forward` has reset the layout: recompute
        it under the layout of the forward pass that saved it."""
        return nullcontext(), self.frame_layout(self.layout.frames, self.layout.video)
