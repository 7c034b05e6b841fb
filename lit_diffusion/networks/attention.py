"""Transformer layers on token sequences for the UNet's cross-attention route.

:class:`TransformerBlock` is LDM's ``BasicTransformerBlock`` (Rombach et al. 2022, §3.3 and App.;
``ldm/modules/attention.py`` of latent-diffusion): self-attention, cross-attention to a conditioning token
sequence and a GEGLU feed-forward (Shazeer 2020), each pre-LayerNorm and residual (Vaswani et al. 2017).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class MultiHeadAttention(nn.Module):
    """Multi-head attention of ``dim``-channel queries to a ``context_dim``-channel sequence, with bias-free
    query/key/value projections (LDM's ``CrossAttention``)."""

    def __init__(self, dim: int, context_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def _split_heads(self, t: Tensor) -> Tensor:
        return t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, heads, N, dim // heads)

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        """Args:
            x: (B, N, dim) queries.
            context: (B, L, context_dim) keys and values.
            mask: (B, L) bool, False at padding tokens, which get no attention.  A sample whose tokens are
                all padding attends to nothing: its output is zero (softmax over no tokens is undefined).
        """
        q, k, v = (self._split_heads(t) for t in (self.to_q(x), self.to_k(context), self.to_v(context)))
        keep = None
        if mask is not None:
            keep = mask.any(dim=-1)[:, None, None]  # (B, 1, 1): the sample has a real token
            mask = (mask[:, None, :] | ~keep)[:, None]  # (B, 1, 1, L); all-padding rows attend anywhere
        h = self.to_out(F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(2))
        return h if keep is None else h * keep


class GEGLU(nn.Module):
    """GELU-gated linear unit ``a * gelu(b)`` with ``[a, b] = W x + c`` (Shazeer 2020)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * out_dim)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(b)


class TransformerBlock(nn.Module):
    """LayerNorm -> self-attention, LayerNorm -> cross-attention to the context, LayerNorm -> GEGLU
    feed-forward with 4x hidden width; each residual (LDM's ``BasicTransformerBlock``)."""

    def __init__(self, dim: int, context_dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = MultiHeadAttention(dim, dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = MultiHeadAttention(dim, context_dim, num_heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(GEGLU(dim, 4 * dim), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn1(h, h)
        x = x + self.attn2(self.norm2(x), context, context_mask)
        return x + self.ff(self.norm3(x))
