"""Captions as a condition: the conditioner embedder of text-to-image models (LDM's ``cond_stage_model`` on the
``crossattn`` route, Rombach et al. 2022, §3.3).

The null caption of classifier-free guidance (Ho & Salimans 2021) is the empty context: every token marked as
padding, so cross-attention adds nothing and the network is its unconditional path.  Captions are dropped with
the embedder's own probability in training (the conditioner's per-key dropout; LDM and Stable Diffusion drop
10 %).  A frozen pretrained encoder is a :class:`~lit_diffusion.frozen.Frozen` part (out of the optimizer and the
EMA, stored once per checkpoint) whose outputs can be cached per caption; a trained one is trained and averaged
with the UNet.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from lit_diffusion.conditioning import Embedder
from lit_diffusion.config import safe_instantiate
from lit_diffusion.datamodules.captions import CAPTION_KEY
from lit_diffusion.errors import UserError
from lit_diffusion.frozen import Frozen
from lit_diffusion.text.encoders import TextEncoder

class TextEmbedder(Embedder):
    """Captions (a list of strings) → token embeddings (B, L, dim) and their padding mask for cross-attention.

    Args:
        encoder: config (``text_encoder`` group) or module of a :class:`~lit_diffusion.text.encoders.TextEncoder`.
        input_key: the batch key of the captions.
        dropout: probability of training on the null caption.
        cache_size: frozen encoders: keep the embeddings of this many recent captions (0: off), so a caption
            is encoded once however often it is seen.
    """

    route = "crossattn"

    def __init__(self, encoder: dict | TextEncoder | None, input_key: str = CAPTION_KEY, dropout: float = 0.1,
                 cache_size: int = 0):
        super().__init__(input_key, dropout)
        if encoder is None:
            raise UserError("conditioner=text needs a text encoder: text_encoder=trained (trained with the UNet), "
                            "minilm (frozen all-MiniLM-L6-v2), clip, openclip or t5")
        encoder = encoder if isinstance(encoder, TextEncoder) else safe_instantiate(encoder)
        self.encoder = encoder if encoder.trainable else Frozen(encoder)
        self.dim, self.cache_size = encoder.dim, cache_size if not encoder.trainable else 0
        self.cache: OrderedDict[str, Tensor] = OrderedDict()

    @property
    def text_encoder(self) -> TextEncoder:
        return self.encoder.module if isinstance(self.encoder, Frozen) else self.encoder

    def fit(self, captions: Callable[[], Sequence[str] | None], broadcast: Callable | None = None) -> None:
        """Fit a trained encoder's tokenizer on the training captions (rank 0's fit in every process)."""
        encoder = self.text_encoder
        if not encoder.trainable or encoder.tokenizer.tokenizer is not None:
            return
        corpus = captions()
        if not corpus:
            raise UserError("the text encoder's tokenizer is fitted on the training captions, but the dataset has none; "
                            "use a captioned dataset (data=fashion_mnist_captions, mnist_captions, mnist_pairs, "
                            "captioned_folder, webdataset)")
        encoder.fit(corpus)
        if broadcast is not None:
            encoder.tokenizer.set(broadcast(encoder.tokenizer.to_str()))

    def spec(self, config: dict) -> dict:
        """The config that rebuilds this embedder from a checkpoint, without the encoder's source."""
        return {**config, "encoder": getattr(self.text_encoder, "spec", config.get("encoder"))}

    def encode(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        """Token embeddings and mask of ``captions``, through the cache of a frozen encoder."""
        if not self.cache_size:
            return self.encoder(captions)
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            tokens, mask = self.encoder(missing)
            self.cache.update((c, t[m]) for c, t, m in zip(missing, tokens, mask))  # real tokens (right-padded)
        for caption in captions:
            self.cache.move_to_end(caption)
        rows = [self.cache[c] for c in captions]
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        tokens = pad_sequence(rows, batch_first=True)
        lengths = torch.tensor([len(r) for r in rows], device=tokens.device)
        return tokens, torch.arange(tokens.shape[1], device=tokens.device)[None] < lengths[:, None]

    def forward(self, value: Sequence[str], drop: Tensor, image_size: int) -> tuple[Tensor, Tensor]:
        if isinstance(value, (str, Tensor)) or not all(isinstance(c, str) for c in value):
            raise UserError(f"condition '{self.input_key}' must be a list of captions (strings), got {type(value).__name__}")
        tokens, mask = self.encode([str(c) for c in value])
        drop = drop.to(mask.device)
        return tokens.masked_fill(drop[:, None, None], 0.0), mask & ~drop[:, None]


def describe_text_encoders(conditioner) -> list[dict]:
    """What evaluation protocols record about a model's text encoders (empty for a model without one)."""
    return [{"embedder": name, "caption_dropout": e.dropout, **e.text_encoder.describe()}
            for name, e in conditioner.embedders.items() if isinstance(e, TextEmbedder)]
