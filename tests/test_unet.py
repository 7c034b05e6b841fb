"""Tests of the UNet denoising network and its noise-level embeddings."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import lit_diffusion
from lit_diffusion.networks import UNet
from lit_diffusion.networks.embeddings import GaussianFourierEmbedding, sinusoidal_embedding
from lit_diffusion.networks.unet import AttentionBlock, ResBlock

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
    "class_conditional": dict(num_classes=10),
    "three_levels_dropout": dict(image_size=28, base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=2,
                                 attention_resolutions=(7,), dropout=0.1),
    "everything": dict(resblock_updown=True, time_embedding="fourier", skip_rescale=True, num_classes=5,
                       num_heads=4, attention_resolutions=(16, 8)),
}


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
    assert net(x, t).shape == x.shape
    wide = make(name, out_channels=6)
    assert wide(x, t).shape == (2, 6, *x.shape[2:])


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
    assert torch.equal(net(x, t), torch.zeros_like(x))


@pytest.mark.parametrize("name", ["class_conditional", "everything"])
def test_class_labels_change_output_and_null_label(name):
    net = perturb(make(name)).eval()
    x, t = inputs(net)
    out0 = net(x, t, torch.tensor([0, 0]))
    out1 = net(x, t, torch.tensor([1, 1]))
    assert (out0 - out1).abs().max() > 1e-4
    null = torch.full((2,), net.num_classes)
    assert torch.equal(net(x, t), net(x, t, null))
    assert (net(x, t) - out0).abs().max() > 1e-4


@pytest.mark.parametrize("resolutions, expected", [((), 1), ((8,), 4), ((16, 8), 7)])
def test_attention_at_the_requested_resolutions(resolutions, expected):
    # per attended level: num_res_blocks (1) down + num_res_blocks + 1 up; plus one in the middle block
    net = make("plain", attention_resolutions=resolutions)
    assert sum(isinstance(m, AttentionBlock) for m in net.modules()) == expected


@pytest.mark.parametrize("skip_rescale, scale", [(False, 1.0), (True, 2**-0.5)])
def test_skip_rescale_scales_the_residual_sum(skip_rescale, scale):
    block = ResBlock(8, 8, emb_ch=32, dropout=0.0, num_groups=32, skip_rescale=skip_rescale)
    x = torch.randn(2, 8, 4, 4)
    assert torch.allclose(block(x, torch.randn(2, 32)), x * scale)  # the residual branch starts at zero


def test_labels_on_unconditional_net_raise():
    net = make("plain")
    x, t = inputs(net)
    with pytest.raises(ValueError, match="unconditional"):
        net(x, t, torch.tensor([0, 1]))


@pytest.mark.parametrize("name", ["plain", "class_conditional", "everything", "three_levels_dropout"])
def test_every_parameter_gets_a_gradient(name):
    net = perturb(make(name))
    x, t = inputs(net)
    labels = torch.tensor([0, 1]) if net.num_classes else None
    net(x, t, labels).square().mean().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{pname} is unused"
        assert p.grad.abs().max() > 1e-7, f"{pname} gets a zero gradient"


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
