"""Text conditioning for text-to-image models: tokenizers, text encoders (trained with the UNet or frozen
pretrained) and the conditioner embedder that feeds their token embeddings to the UNet's cross-attention."""

from lit_diffusion.text.embedder import TextEmbedder, describe_text_encoders
from lit_diffusion.text.encoders import PretrainedTextEncoder, TextEncoder, TrainedTextEncoder
from lit_diffusion.text.tokenizer import SharedTokenizer, fit_wordpiece

__all__ = ["PretrainedTextEncoder", "SharedTokenizer", "TextEmbedder", "TextEncoder", "TrainedTextEncoder",
           "describe_text_encoders", "fit_wordpiece"]
