"""Tests of the UNet denoising network, its conditioning routes and its noise-level embeddings."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import lit_diffusion
from lit_diffusion.networks import UNet
from lit_diffusion.networks.attention import MultiHeadAttention
from lit_diffusion.networks.embeddings import GaussianFourierEmbedding, sinusoidal_embedding
from lit_diffusion.networks.unet import AttentionBlock, ResBlock, SpatialTransformer

CONFIG_DIR = Path(lit_diffusion.__file__).parent / "configs" / "network"

# Small nets: 16x16 inputs, levels 16 -> 8.
SMALL = dict(in_channels=3, image_size=16, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
             attention_resolutions=(8,))
CONFIGS = {
    "plain": {},
    "no_attention": dict(attention_resolutions=()),
    "attention_everywhere_2_heads": dict(attention_resolutions=(16, 8), num_heads=2),
    "resblock_updown": dict(resblock_updown=True),
    "fourier": dict(time_embedding="fourier"),
    "skip_rescale": dict(skip_rescale=True),
    "three_levels_dropout": dict(image_size=28, base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=2,
                                 attention_resolutions=(7,), dropout=0.1),
    "vector": dict(vector_dim=6),
    "concat": dict(concat_channels=2),
    "crossattn": dict(context_dim=12, num_heads=2),
    "everything": dict(resblock_updown=True, time_embedding="fourier", skip_rescale=True, num_heads=4,
                       attention_resolutions=(16, 8), vector_dim=6, concat_channels=2, context_dim=12,
                       transformer_depth=2),
}
UNCONDITIONAL = ["plain", "no_attention", "attention_everywhere_2_heads", "resblock_updown", "fourier",
                 "skip_rescale", "three_levels_dropout"]
TOKENS = 5  # context length of the cross-attention route


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tiny nets run fastest on one thread, which also avoids stalls when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(name: str, **overrides) -> UNet:
    torch.manual_seed(0)
    return UNet(**{**SMALL, **CONFIGS[name], **overrides})


def inputs(net: UNet, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    size = net.image_size
    x = torch.randn(batch, net.in_channels, size, size, generator=gen)
    return x, torch.rand(batch, generator=gen) * 1000


def conditions(net: UNet, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs for the net's configured routes; the second sample's context has 3 padding tokens."""
    gen = torch.Generator().manual_seed(100 + seed)
    cond = {}
    if net.vector_dim:
        cond["vector"] = torch.randn(batch, net.vector_dim, generator=gen)
    if net.concat_channels:
        cond["concat"] = torch.randn(batch, net.concat_channels, net.image_size, net.image_size, generator=gen)
    if net.context_dim:
        cond["crossattn"] = torch.randn(batch, TOKENS, net.context_dim, generator=gen)
        lengths = torch.tensor([TOKENS] + [2] * (batch - 1))
        cond["crossattn_mask"] = torch.arange(TOKENS) < lengths[:, None]
    return cond


def perturb(net: UNet, std: float = 0.05) -> UNet:
    """Add noise to every parameter, so that the zero-initialised layers no longer hide any path."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return net


@pytest.mark.parametrize("name", CONFIGS)
def test_output_shape(name):
    net = make(name)
    x, t = inputs(net)
    assert net(x, t, conditions(net)).shape == x.shape
    wide = make(name, out_channels=6)
    assert wide(x, t, conditions(net)).shape == (2, 6, *x.shape[2:])


@pytest.mark.parametrize("name", ["plain", "fourier"])
def test_noise_cond_changes_output_and_broadcasts(name):
    net = perturb(make(name))
    x, _ = inputs(net)
    per_sample = net(x, torch.full((2,), 0.3))
    assert torch.allclose(net(x, torch.tensor(0.3)), per_sample, atol=1e-6)
    assert (net(x, torch.full((2,), 0.8)) - per_sample).abs().max() > 1e-4
    for t in (torch.tensor([-1.7, 0.25]), torch.tensor([0, 999])):  # log(sigma)/4, integer timesteps
        assert torch.isfinite(net(x, t)).all()


@pytest.mark.parametrize("name", CONFIGS)
def test_untrained_output_is_zero(name):
    net = make(name)
    x, t = inputs(net)
    assert torch.equal(net(x, t, conditions(net)), torch.zeros_like(x))


@pytest.mark.parametrize("name, route", [("vector", "vector"), ("concat", "concat"), ("crossattn", "crossattn"),
                                         *[("everything", route) for route in ("vector", "concat", "crossattn")]])
def test_each_route_changes_output_and_is_deterministic(name, route):
    net = perturb(make(name)).eval()
    x, t = inputs(net)
    cond = conditions(net)
    out = net(x, t, cond)
    assert torch.equal(net(x, t, {key: value.clone() for key, value in cond.items()}), out)
    other = {**cond, route: conditions(net, seed=1)[route]}
    assert (net(x, t, other) - out).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # every sample changes


def test_crossattn_ignores_padding_tokens():
    net = perturb(make("crossattn")).eval()
    x, t = inputs(net)
    context = conditions(net)["crossattn"]
    mask = torch.tensor([[True, True, True, False, False], [True, False, True, False, False]])
    out = net(x, t, {"crossattn": context, "crossattn_mask": mask})

    garbage = torch.where(mask[..., None], context, 100 * torch.randn_like(context))
    torch.testing.assert_close(net(x, t, {"crossattn": garbage, "crossattn_mask": mask}), out, rtol=0, atol=1e-6)
    # with the same padding in every sample, masking equals dropping the padded tokens
    torch.testing.assert_close(net(x, t, {"crossattn": context[:, :3], "crossattn_mask": mask[:, :3]}), out,
                               rtol=0, atol=1e-6)
    for sample, token in [(0, 1), (1, 2)]:  # kept tokens
        changed = context.clone()
        changed[sample, token] += 1.0
        diff = (net(x, t, {"crossattn": changed, "crossattn_mask": mask}) - out).abs().amax(dim=(1, 2, 3))
        assert diff[sample] > 1e-4 and diff[1 - sample] < 1e-6

    all_true = torch.ones(2, TOKENS, dtype=torch.bool)
    torch.testing.assert_close(net(x, t, {"crossattn": context, "crossattn_mask": all_true}),
                               net(x, t, {"crossattn": context}), rtol=0, atol=1e-6)


def test_crossattn_with_only_padding_tokens_ignores_the_context():
    torch.manual_seed(0)
    attention = MultiHeadAttention(8, 12, num_heads=2)
    mask = torch.tensor([[True, False, False, False, False], [False] * TOKENS])
    out = attention(torch.randn(2, 7, 8), torch.randn(2, TOKENS, 12), mask)
    assert out[0].abs().max() > 1e-4 and torch.equal(out[1], torch.zeros_like(out[1]))  # not NaN, not the bias

    net = perturb(make("crossattn")).eval()
    x, t = inputs(net)
    none_kept = torch.zeros(2, TOKENS, dtype=torch.bool)
    out = net(x, t, {"crossattn": conditions(net)["crossattn"], "crossattn_mask": none_kept})
    assert torch.isfinite(out).all()
    other = net(x, t, {"crossattn": conditions(net, seed=1)["crossattn"], "crossattn_mask": none_kept})
    torch.testing.assert_close(other, out, rtol=0, atol=1e-6)


@pytest.mark.parametrize("resolutions, expected", [((), 1), ((8,), 4), ((16, 8), 7)])
def test_attention_at_the_requested_resolutions(resolutions, expected):
    # per attended level: num_res_blocks (1) down + num_res_blocks + 1 up; plus one in the middle block
    net = make("plain", attention_resolutions=resolutions)
    assert sum(isinstance(m, AttentionBlock) for m in net.modules()) == expected
    net = make("crossattn", attention_resolutions=resolutions, transformer_depth=2)
    assert not any(isinstance(m, AttentionBlock) for m in net.modules())
    transformers = [m for m in net.modules() if isinstance(m, SpatialTransformer)]
    assert len(transformers) == expected and all(len(m.transformer_blocks) == 2 for m in transformers)


def _param_keys(prefix: str, *names: str) -> list[str]:
    return [f"{prefix}.{name}.{kind}" for name in names for kind in ("weight", "bias")]


RES = ("norm1", "conv1", "emb_proj", "norm2", "conv2")
ATTENTION = ("norm", "qkv", "proj")
# state_dict keys of make("plain") recorded before the conditioning routes were added
PLAIN_KEYS = [
    *_param_keys("time_mlp", "0", "2"), "conv_in.weight", "conv_in.bias",
    *_param_keys("down.0.0", *RES), *_param_keys("down.1.0", "conv"), *_param_keys("down.2.0", *RES, "skip"),
    *_param_keys("down.2.1", *ATTENTION),
    *_param_keys("mid.0", *RES), *_param_keys("mid.1", *ATTENTION), *_param_keys("mid.2", *RES),
    *_param_keys("up.0.0", *RES, "skip"), *_param_keys("up.0.1", *ATTENTION),
    *_param_keys("up.1.0", *RES, "skip"), *_param_keys("up.1.1", *ATTENTION), *_param_keys("up.1.2", "conv"),
    *_param_keys("up.2.0", *RES, "skip"), *_param_keys("up.3.0", *RES, "skip"),
    *_param_keys("out", "0", "2"),
]


def test_unconditional_state_dict_is_unchanged():
    assert list(make("plain").state_dict()) == PLAIN_KEYS
    for name in UNCONDITIONAL:
        keys = make(name).state_dict()
        assert not [k for k in keys if any(s in k for s in ("vector_proj", "transformer", "proj_in", "attn"))]
    keys = make("everything").state_dict()
    assert "vector_proj.weight" in keys and "mid.1.transformer_blocks.1.attn2.to_k.weight" in keys


@pytest.mark.parametrize("skip_rescale, scale", [(False, 1.0), (True, 2**-0.5)])
def test_skip_rescale_scales_the_residual_sum(skip_rescale, scale):
    block = ResBlock(8, 8, emb_ch=32, dropout=0.0, num_groups=32, skip_rescale=skip_rescale)
    x = torch.randn(2, 8, 4, 4)
    assert torch.allclose(block(x, torch.randn(2, 32)), x * scale)  # the residual branch starts at zero


@pytest.mark.parametrize("name, change, match", [
    ("plain", {"vector": torch.zeros(2, 6)}, "without vector_dim; set vector_dim"),
    ("plain", {"concat": torch.zeros(2, 2, 16, 16)}, "without concat_channels; set concat_channels"),
    ("plain", {"crossattn": torch.zeros(2, TOKENS, 12)}, "without context_dim; set context_dim"),
    ("plain", {"crossattn_mask": torch.ones(2, TOKENS, dtype=torch.bool)}, "set context_dim"),
    ("plain", {"label": torch.zeros(2)}, r"unknown cond keys \['label'\]"),
    ("vector", {"vector": None}, r"cond\['vector'\] is missing.*vector_dim=6"),
    ("concat", {"concat": None}, r"cond\['concat'\] is missing.*concat_channels=2"),
    ("crossattn", {"crossattn": None}, r"cond\['crossattn'\] is missing.*context_dim=12"),
    ("vector", {"vector": torch.zeros(2, 5)}, r"'vector'\] must have shape \(2, 6\), got \(2, 5\)"),
    ("vector", {"vector": torch.zeros(3, 6)}, r"must have shape \(2, 6\), got \(3, 6\)"),
    ("concat", {"concat": torch.zeros(2, 2, 8, 8)}, r"\(2, 2, 16, 16\), got \(2, 2, 8, 8\)"),
    ("crossattn", {"crossattn": torch.zeros(2, TOKENS, 7)}, r"\(2, L, 12\), got \(2, 5, 7\)"),
    ("crossattn", {"crossattn": torch.zeros(2, 12)}, r"\(2, L, 12\), got \(2, 12\)"),
    ("crossattn", {"crossattn_mask": torch.ones(2, 4, dtype=torch.bool)}, r"\(2, 5\), got \(2, 4\)"),
    ("crossattn", {"crossattn_mask": torch.ones(2, TOKENS)}, "must be boolean"),
])
def test_misconfigured_cond_raises(name, change, match):
    net = make(name)
    x, t = inputs(net)
    cond = {**conditions(net), **change}
    cond = {key: value for key, value in cond.items() if value is not None}
    with pytest.raises(ValueError, match=match):
        net(x, t, cond)


def test_class_labels_in_place_of_cond_raise():
    net = make("plain")
    x, t = inputs(net)
    with pytest.raises(TypeError, match="cond\\['vector'\\]"):
        net(x, t, torch.tensor([0, 1]))


@pytest.mark.parametrize("name", ["plain", "vector", "concat", "crossattn", "everything", "three_levels_dropout"])
def test_every_parameter_and_conditioning_input_gets_a_gradient(name):
    net = perturb(make(name))
    x, t = inputs(net)
    cond = conditions(net)
    for key in ("vector", "concat", "crossattn"):
        if key in cond:
            cond[key].requires_grad_()
    net(x, t, cond).square().mean().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{pname} is unused"
        assert p.grad.abs().max() > 1e-7, f"{pname} gets a zero gradient"
    for key in ("vector", "concat"):
        if key in cond:
            assert cond[key].grad.abs().max() > 1e-7
    if "crossattn" in cond:  # gradients reach the real tokens only
        grad = cond["crossattn"].grad.abs().amax(dim=-1)
        assert (grad[cond["crossattn_mask"]] > 1e-7).all() and (grad[~cond["crossattn_mask"]] == 0).all()


def _from_config(name: str, channels: int, image_size: int) -> UNet:
    cfg = OmegaConf.create({"data": {"channels": channels, "image_size": image_size},
                            "network": OmegaConf.load(CONFIG_DIR / f"{name}.yaml")})
    return instantiate(cfg.network)


def test_ddpm_cifar10_config_has_the_papers_35_7m_parameters():
    net = _from_config("unet_ddpm_cifar10", channels=3, image_size=32)
    assert abs(sum(p.numel() for p in net.parameters()) - 35.7e6) < 0.1e6


def test_default_config_is_a_small_mnist_net():
    net = _from_config("unet", channels=1, image_size=28)
    assert 0.5e6 <= sum(p.numel() for p in net.parameters()) <= 1.5e6
    x = torch.randn(2, 1, 28, 28)
    assert net(x, torch.tensor([3.0, 500.0])).shape == x.shape


def test_sinusoidal_embedding_matches_closed_form():
    dim, half = 8, 4
    t = torch.tensor([0.0, 1.0, 37.5, 999.0, -2.3])
    emb = sinusoidal_embedding(t, dim)
    for i, ti in enumerate(t.tolist()):
        for k in range(half):
            freq = 10000 ** (-k / (half - 1))
            assert emb[i, k].item() == pytest.approx(math.sin(ti * freq), abs=1e-4)
            assert emb[i, half + k].item() == pytest.approx(math.cos(ti * freq), abs=1e-4)


def test_fourier_embedding_is_a_saved_buffer_and_matches_closed_form():
    torch.manual_seed(0)
    embed = GaussianFourierEmbedding(8, scale=16.0)
    assert "weight" in embed.state_dict() and not list(embed.parameters())
    t = torch.tensor([-1.2, 0.0, 0.7])
    args = 2 * math.pi * t[:, None] * embed.weight[None, :]
    assert torch.allclose(embed(t), torch.cat([args.sin(), args.cos()], dim=1), atol=1e-5)
    torch.manual_seed(1)
    other = GaussianFourierEmbedding(8, scale=16.0)
    other.load_state_dict(embed.state_dict())
    assert torch.equal(other(t), embed(t))


def test_image_size_not_divisible_raises():
    with pytest.raises(ValueError, match="divisible"):
        UNet(image_size=28, base_channels=8, channel_mult=(1, 2, 2, 2))


def test_unknown_time_embedding_raises():
    with pytest.raises(ValueError, match="time_embedding"):
        UNet(image_size=16, base_channels=8, time_embedding="learned")


def test_num_head_channels_not_dividing_an_attention_block_raises():
    assert UNet(image_size=16, base_channels=16, channel_mult=(1, 2), attention_resolutions=(8,), num_groups=8,
                num_head_channels=16).mid[1].num_heads == 2
    with pytest.raises(ValueError, match="num_head_channels=64 must divide the 32 channels"):
        UNet(image_size=16, base_channels=16, channel_mult=(1, 2), attention_resolutions=(8,), num_groups=8,
             num_head_channels=64)
