"""Text-to-image: tokenizers, text encoders, the text embedder on the cross-attention route, caption generators."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers

from lit_diffusion.datamodules.captioned_mnist import CANVAS, compose_pairs
from lit_diffusion.datamodules.captions import FASHION_MNIST, MNIST, DigitPairCaptions
from lit_diffusion.errors import UserError
from lit_diffusion.frozen import Frozen
from lit_diffusion.metrics.text_alignment import build_text_metrics
from lit_diffusion.models import DDPM
from lit_diffusion.networks.attention import TransformerBlock
from lit_diffusion.text import PretrainedTextEncoder, TextEmbedder, TrainedTextEncoder, fit_wordpiece
from lit_diffusion.text.tokenizer import UNK

PAIRS = DigitPairCaptions()
CAPTIONS = (FASHION_MNIST.captions(np.arange(1000) % 10) + MNIST.captions(np.arange(400) % 10)
            + PAIRS.captions(np.arange(400) % 100))
UNET = {"_target_": "lit_diffusion.networks.UNet", "in_channels": 1, "image_size": 8, "base_channels": 8,
        "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [4], "num_heads": 2, "num_groups": 4}
TRAINED = {"_target_": "lit_diffusion.text.TrainedTextEncoder", "vocab_size": 300, "width": 16, "depth": 1, "heads": 2}


def text_ddpm(encoder=TRAINED, dropout=0.1) -> DDPM:
    torch.manual_seed(0)
    model = DDPM(network=UNET, process={"_target_": "lit_diffusion.processes.DiscreteVP", "num_timesteps": 100},
                 optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
                 sampler={"algorithm": "ddim", "steps": 3}, image_shape=[1, 8, 8],
                 conditioner={"embedders": {"caption": {"_target_": "lit_diffusion.text.TextEmbedder",
                                                        "encoder": encoder, "dropout": dropout}}})
    model.conditioner.fit(lambda: CAPTIONS)
    for param in model.network.parameters():  # zero-initialised output layers would hide the condition
        if not param.any():
            torch.nn.init.normal_(param, std=0.1)
    return model.eval()


def tiny_clip(folder) -> str:
    """A random CLIP text tower and a tokenizer in save_pretrained layout (the real loading path, offline)."""
    torch.manual_seed(0)
    tokenizer = fit_wordpiece(CAPTIONS, 200)
    config = transformers.CLIPTextConfig(vocab_size=200, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, max_position_embeddings=32,
                                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    transformers.CLIPTextModel(config).save_pretrained(folder)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token=UNK).save_pretrained(folder)
    return str(folder)


def test_the_tokenizer_round_trips_the_caption_vocabulary_and_its_ids_depend_only_on_the_captions():
    tokenizer = fit_wordpiece(CAPTIONS, 300)
    unk = tokenizer.token_to_id(UNK)
    for caption in set(CAPTIONS):
        ids = tokenizer.encode(caption).ids
        assert unk not in ids and tokenizer.decode(ids) == caption
    assert fit_wordpiece(CAPTIONS[::-1], 300).to_str() == tokenizer.to_str()  # a function of the captions only
    zebra = tokenizer.encode("a photo of a zebra")  # an unknown word: its characters
    assert tokenizer.decode(zebra.ids) == "a photo of a zebra" and len(zebra.ids) == 2 + 4 + 5
    assert tokenizer.encode("a photo of a zebra \u2603").ids.count(unk) == 1  # an unseen character
    with pytest.raises(UserError, match="vocab_size"):
        fit_wordpiece(CAPTIONS, 20)


def test_a_null_caption_is_the_unconditional_path():
    """Dropped captions mask every token: cross-attention then adds exactly nothing, whatever the caption."""
    model = text_ddpm()
    x, sigma = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.full((3,), 1.5)
    captions = {"caption": ["a photo of a top", "a 3 on the left and an 8 on the right", "an ankle boot"]}
    other = {"caption": ["a bag", "a sneaker", "a 9 to the left of a 1"]}
    with torch.no_grad():
        dropped = model.denoise(x, sigma, model.conditioner(captions, drop=["caption"]))
        hooks = [m.attn2.register_forward_hook(lambda mod, inp, out: torch.zeros_like(out))
                 for m in model.network.modules() if isinstance(m, TransformerBlock)]
        assert hooks
        without_cross_attention = model.denoise(x, sigma, model.conditioner(other))
        for hook in hooks:
            hook.remove()
        conditional = model.denoise(x, sigma, model.conditioner(captions))
    torch.testing.assert_close(dropped, without_cross_attention, rtol=0, atol=1e-6)
    assert (conditional - dropped).abs().max() > 1e-3


def test_padding_tokens_do_not_change_the_output():
    model = text_ddpm()
    x, sigma = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.full((1,), 2.0)
    short, long = "a top", "a black and white picture of a pair of trousers on a dark background"
    with torch.no_grad():
        alone = model.conditioner({"caption": [short]})
        padded = model.conditioner({"caption": [short, long]})
        assert alone["crossattn"].shape[1] < padded["crossattn"].shape[1]
        batched = model.denoise(x.expand(2, -1, -1, -1), sigma.expand(2), padded)[:1]
        torch.testing.assert_close(model.denoise(x, sigma, alone), batched, rtol=0, atol=1e-5)


def test_caption_dropout_rate_is_honoured():
    model = text_ddpm(dropout=0.25)
    n = 8000
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.conditioner({"caption": ["a photo of a coat"] * n}, train_dropout=True)
    rate = (~out["crossattn_mask"].any(1)).float().mean().item()
    assert abs(rate - 0.25) < 3 * (0.25 * 0.75 / n) ** 0.5, rate
    assert (out["crossattn"][~out["crossattn_mask"].any(1)] == 0).all()


def test_a_trained_encoder_trains_with_the_unet_and_its_ema_copy_shares_the_fitted_tokenizer():
    model = text_ddpm()
    encoder = model.conditioner.embedders["caption"].encoder
    assert isinstance(encoder, TrainedTextEncoder) and encoder.trainable
    trainable = {id(p) for g in model.configure_optimizers().param_groups for p in g["params"]}
    assert all(id(p) in trainable for p in encoder.parameters())
    fresh = TrainedTextEncoder(vocab_size=300, width=16, depth=1, heads=2)
    ema = copy.deepcopy(fresh)
    fresh.fit(CAPTIONS)
    assert ema.tokenizer is fresh.tokenizer and ema.tokenizer.tokenizer is not None
    restored = TrainedTextEncoder(vocab_size=300, width=16, depth=1, heads=2)
    restored.load_state_dict(fresh.state_dict())  # the tokenizer travels in the state dict
    assert restored.tokenizer.to_str() == fresh.tokenizer.to_str()


def test_a_frozen_pretrained_encoder_loads_by_folder_caches_per_caption_and_rebuilds_without_its_source(tmp_path):
    source = tiny_clip(tmp_path / "clip")
    embedder = TextEmbedder({"_target_": "lit_diffusion.text.PretrainedTextEncoder", "source": source}, cache_size=2)
    assert isinstance(embedder.encoder, Frozen) and not any(p.requires_grad for p in embedder.parameters())
    encoder = embedder.text_encoder
    assert encoder.spec["architecture"] == "CLIPTextModel" and encoder.dim == 16
    calls = []
    encoder.register_forward_hook(lambda mod, inp, out: calls.append(len(inp[0])))
    captions = ["a photo of a top", "a bag", "a photo of a top"]
    keep = torch.zeros(3, dtype=torch.bool)
    cached = embedder(captions, keep, 8)
    embedder(captions[:2], keep[:2], 8)
    assert calls == [2]  # each caption encoded once
    direct = embedder.encoder(captions)
    torch.testing.assert_close(cached[0], direct[0] * direct[1][..., None])
    assert torch.equal(cached[1], direct[1])
    rebuilt = PretrainedTextEncoder(**{k: v for k, v in encoder.spec.items() if k != "_target_"} | {"source": "gone"})
    rebuilt.load_state_dict(encoder.state_dict())
    torch.testing.assert_close(rebuilt(captions)[0], direct[0])


def test_an_unreachable_pretrained_encoder_is_one_message(monkeypatch):
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("We couldn't connect to 'https://huggingface.co'")))
    with pytest.raises(UserError, match="could not be loaded.*huggingface-cli download openai/clip-vit-large-patch14"):
        PretrainedTextEncoder("openai/clip-vit-large-patch14")


def test_minilm_gives_token_embeddings_from_the_wheel():
    encoder = PretrainedTextEncoder("minilm")
    tokens, mask = encoder(["a photo of an ankle boot", "a shoe"])
    assert tokens.shape[-1] == 384 and mask.sum(1).tolist() == [8, 4]  # [CLS] … [SEP]
    assert encoder.spec["source_sha256"] and encoder.spec["architecture"] == "BertModel"


def test_positional_captions_match_the_canvas():
    """Digits whose pixels spell their label: each half of a canvas shows the digit its caption puts there."""
    labels = np.arange(10)
    digits = np.zeros((10, 28, 28), dtype=np.uint8)
    for d in labels:
        digits[d, 4:24, 4:24] = 20 * d + 10
    canvases, pair_labels = compose_pairs(digits, labels, 200, seed=0)
    captions = PAIRS.captions(pair_labels, seed=3)
    half, top = CANVAS // 2, CANVAS // 4
    for canvas, caption in zip(canvas_list := list(canvases), captions):
        label = PAIRS.label_of(caption)
        assert round((canvas[top + 4, 4] - 10) / 20) == label // 10
        assert round((canvas[top + 4, half + 4] - 10) / 20) == label % 10
    assert canvas_list[0][:top].max() == 0  # margins stay black
    assert {PAIRS.label_of(PAIRS.caption(a, b, t)) for a in range(10) for b in range(10) for t in range(4)} == set(range(100))
    assert len(set(captions)) > 100  # all four templates, both word orders


def test_class_captions_name_their_class():
    labels = np.arange(500) % 10
    assert [FASHION_MNIST.label_of(c) for c in FASHION_MNIST.captions(labels)] == labels.tolist()
    assert [MNIST.label_of(c) for c in MNIST.captions(labels)] == labels.tolist()
    assert FASHION_MNIST.label_of("a photo of a zebra") is None


def test_clip_score_without_reachable_weights_is_skipped_with_one_message(tmp_path):
    """No CLIP weights offline: clip_score is left out with a message naming the fix, the other metrics stay."""
    metrics, skipped = build_text_metrics(["clip_score"], None, ["a photo of a 3"], str(tmp_path / "no_clip"))
    assert metrics == [] and len(skipped) == 1
    assert skipped[0].startswith("clip_score skipped") and "clip_model=/path/to/folder" in skipped[0]
    with pytest.raises(UserError, match="prompt"):
        build_text_metrics(["clip_score"], None, None, str(tmp_path / "no_clip"))
