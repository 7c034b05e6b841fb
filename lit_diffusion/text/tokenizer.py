"""Tokenizers of captions, kept with the model that uses them.

A text encoder trained from scratch tokenizes with a WordPiece vocabulary (Wu et al. 2016; BERT's tokenizer,
Devlin et al. 2019) fitted on the training captions and run by the ``tokenizers`` library, as LDM's text-to-image
model pairs a BERT-style transformer with a BERT tokenizer (Rombach et al. 2022, §4.3.1).  A pretrained encoder
brings its own (fast) tokenizer.  Either way the model keeps a ``tokenizers.Tokenizer`` as part of its state
(serialised to JSON in every checkpoint), so sampling from a checkpoint needs nothing else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from torch import Tensor

from lit_diffusion.errors import UserError

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP)


def fit_wordpiece(captions: Iterable[str], vocab_size: int) -> Tokenizer:
    """A BERT-style WordPiece tokenizer fitted on ``captions``: lower-cased, split on whitespace and punctuation,
    ``[CLS] … [SEP]`` around every caption.

    The vocabulary is every character of the captions (word-initial and ``##`` continuation pieces) and then the
    most frequent whole words (ties in alphabetical order) up to ``vocab_size`` tokens, numbered in a canonical
    order (special tokens, pieces, words sorted).  WordPiece's greedy longest match (Wu et al. 2016) then reads a
    caption word as one token and any other word as characters; only an unseen character is ``[UNK]``.  Counting
    words ourselves (with the library's normaliser and pre-tokeniser) keeps a fit a function of the captions: the
    library's ``WordPieceTrainer`` breaks ties between merges in a hash order that changes from run to run.
    """
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    counts = Counter(word for caption in captions
                     for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(caption)))
    characters = sorted({c for word in counts for c in word})
    pieces = [*characters, *(f"##{c}" for c in characters)]
    room = vocab_size - len(SPECIAL_TOKENS) - len(pieces)
    if room < 0:
        raise UserError(f"the captions need {len(SPECIAL_TOKENS) + len(pieces)} WordPiece tokens (their characters "
                        f"alone), more than text_encoder.vocab_size={vocab_size}; raise it")
    words = [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if len(w) > 1][:room]
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *pieces, *sorted(words)])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=UNK))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))  # already in the vocabulary: only marks them (decode skips them)
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{CLS} $A {SEP}",
                                                             special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])])
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


class SharedTokenizer:
    """The tokenizer of a text encoder (none until fitted or loaded), shared by deep copies of the model: the EMA
    copy, made before training starts, sees the tokenizer fitted afterwards.

    Calling it tokenizes a batch of captions to ids (B, L) and a padding mask (B, L), True at real tokens, padded
    on the right to the longest caption and truncated at ``max_length`` tokens.
    """

    def __init__(self, max_length: int):
        self.max_length = max_length
        self.tokenizer: Tokenizer | None = None

    def __deepcopy__(self, memo: dict) -> "SharedTokenizer":
        return self

    def set(self, tokenizer: Tokenizer | str | None, pad_token: str | None = None) -> None:
        """Use ``tokenizer`` (or its JSON), padding with ``pad_token`` (default: its own padding token, [PAD] or id 0)."""
        if isinstance(tokenizer, str):
            tokenizer = Tokenizer.from_str(tokenizer)
        if tokenizer is not None:
            pad = pad_token or (tokenizer.padding or {}).get("pad_token") or PAD
            pad_id = tokenizer.token_to_id(pad)
            tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad)
            tokenizer.enable_truncation(self.max_length)
        self.tokenizer = tokenizer

    def to_str(self) -> str | None:
        return None if self.tokenizer is None else self.tokenizer.to_str()

    def __call__(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        if self.tokenizer is None:
            raise UserError("the text encoder's tokenizer is not fitted yet: it is fitted on the training captions "
                            "when training starts (python -m lit_diffusion.run), and a checkpoint keeps it")
        encodings = self.tokenizer.encode_batch(list(captions))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool)
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))
