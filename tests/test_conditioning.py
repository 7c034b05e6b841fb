"""Conditioning as a dict, guiders, per-image seeds, sampling from an image, frozen parts."""

import copy

import pytest
import torch

from lit_diffusion.conditioning import ClassEmbedder, ConcatEmbedder, Conditioner, ContextEmbedder
from lit_diffusion.errors import UserError
from lit_diffusion.frozen import Frozen
from lit_diffusion.guidance import ClassifierFree, NoGuidance
from lit_diffusion.models import DDPM, EDM
from lit_diffusion.processes import DiscreteVP

UNET = {"_target_": "lit_diffusion.networks.UNet", "in_channels": 1, "image_size": 8, "base_channels": 8,
        "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [4], "num_groups": 4}
CLASS = {"_target_": "lit_diffusion.conditioning.ClassEmbedder", "num_classes": 3, "dim": 16, "dropout": 0.1}


def tiny_ddpm(embedders=None, **kwargs) -> DDPM:
    torch.manual_seed(0)
    model = DDPM(network=UNET, process={"_target_": "lit_diffusion.processes.DiscreteVP", "num_timesteps": 100},
                 optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
                 sampler={"algorithm": "ddim", "steps": 5}, image_shape=[1, 8, 8],
                 conditioner={"embedders": embedders or {}}, **kwargs)
    for param in model.network.parameters():  # zero-initialised output layers would hide the conditions
        if not param.any():
            torch.nn.init.normal_(param, std=0.1)
    return model.eval()


def test_per_key_dropout_rates_are_honoured():
    """Empirical null rate of each key within 3 standard errors of its own probability over 10k draws."""
    conditioner = Conditioner({"label": ClassEmbedder(3, 4, dropout=0.1),
                               "source": ConcatEmbedder(1, "source", dropout=0.5)}, image_size=2)
    n = 10_000
    torch.manual_seed(0)
    out = conditioner({"label": torch.zeros(n, dtype=torch.long), "source": torch.ones(n, 1, 2, 2)}, train_dropout=True)
    null_vector = conditioner.embedders["label"].table.weight[3]
    rates = {"label": (out["vector"] == null_vector).all(1).float().mean().item(),
             "source": (out["concat"] == 0).flatten(1).all(1).float().mean().item()}
    for key, p in (("label", 0.1), ("source", 0.5)):
        assert abs(rates[key] - p) < 3 * (p * (1 - p) / n) ** 0.5, (key, rates[key])


def test_routes_reach_the_network_and_dropped_conditions_are_ignored():
    model = tiny_ddpm({"label": CLASS,
                       "low_res": {"_target_": "lit_diffusion.conditioning.ConcatEmbedder", "channels": 1,
                                   "input_key": "low_res", "dropout": 0.2},
                       "text": {"_target_": "lit_diffusion.conditioning.ContextEmbedder", "dim": 6,
                                "input_key": "tokens", "dropout": 0.2}})
    assert (model.network.vector_dim, model.network.concat_channels, model.network.context_dim) == (16, 1, 6)
    g = torch.Generator().manual_seed(0)
    x, sigma = torch.randn(2, 1, 8, 8, generator=g), torch.full((2,), 2.0)
    inputs = {"label": torch.tensor([0, 1]), "low_res": torch.randn(2, 1, 4, 4, generator=g),
              "tokens": torch.randn(2, 5, 6, generator=g)}
    other = {"label": torch.tensor([2, 2]), "low_res": torch.randn(2, 1, 4, 4, generator=g),
             "tokens": torch.randn(2, 5, 6, generator=g)}
    with torch.no_grad():
        base = model.denoise(x, sigma, model.conditioner(inputs))
        for key, value in other.items():
            changed = model.denoise(x, sigma, model.conditioner({**inputs, key: value}))
            assert (changed - base).abs().max() > 1e-4, key
            name = {"label": "label", "low_res": "low_res", "tokens": "text"}[key]
            dropped = model.denoise(x, sigma, model.conditioner(inputs, drop=[name]))
            dropped_other = model.denoise(x, sigma, model.conditioner({**inputs, key: value}, drop=[name]))
            torch.testing.assert_close(dropped, dropped_other, rtol=0, atol=1e-6)


def test_batched_cfg_equals_the_two_forward_formula():
    model = tiny_ddpm({"label": CLASS})
    conditions = {"label": torch.tensor([0, 1, 2, 1])}
    cond, uncond = model.conditioner(conditions), model.conditioner(conditions, drop=["label"])
    x, sigma = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.full((4,), 3.0)
    with torch.no_grad():
        batched = ClassifierFree(2.5).denoiser(model.sampling_denoiser, cond, uncond, conditions)(x, sigma)
        d_c, d_u = model.sampling_denoiser(x, sigma, cond), model.sampling_denoiser(x, sigma, uncond)
    torch.testing.assert_close(batched, d_u + 2.5 * (d_c - d_u), rtol=0, atol=1e-6)


def test_cfg_scales_zero_and_one_are_the_unconditional_and_conditional_samplers():
    model = tiny_ddpm({"label": CLASS})
    labels = {"label": torch.tensor([0, 1, 2, 1])}
    cond = model.sample(4, seed=3, conditions=labels).images
    w1 = model.sample(4, seed=3, conditions=labels, guider=ClassifierFree(1.0)).images
    w0 = model.sample(4, seed=3, conditions=labels, guider=ClassifierFree(0.0)).images
    torch.testing.assert_close(w1, cond, rtol=1e-5, atol=1e-5)
    assert (cond - w0).abs().max() > 1e-3
    # w = 0 is the model with the label dropped to its null embedding
    null = {"vector": model.conditioner.embedders["label"].table.weight[3].expand(4, -1)}
    expected = model.sample(4, seed=3, conditions=labels, guider=_Fixed(null)).images
    torch.testing.assert_close(w0, expected, rtol=1e-5, atol=1e-5)


class _Fixed(NoGuidance):
    """No guidance, with the embedded conditions replaced by fixed ones."""

    def __init__(self, cond):
        self.cond = cond

    def denoiser(self, denoise, cond, uncond, conditions):
        return lambda x, sigma: denoise(x, sigma, self.cond)


def test_dropout_one_trains_the_unconditional_model():
    """With dropout 1.0 every training batch sees only the null label: the loss on labelled batches equals the
    loss with the label dropped, for any labels, so the model learns D(x, σ | ∅) alone."""
    model = tiny_ddpm({"label": {**CLASS, "dropout": 1.0}}).train()
    x0 = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    losses = []
    for labels in (torch.zeros(8, dtype=torch.long), torch.arange(8) % 3):
        torch.manual_seed(5)
        losses.append(model.batch_loss({"image": x0, "label": labels}, train=True))
    torch.manual_seed(5)
    torch.rand(8)  # the dropout draw, as batch_loss makes it
    unconditional = model.loss(x0, model.conditioner({"label": torch.zeros(8, dtype=torch.long)}, drop=["label"]))
    assert losses[0].item() == losses[1].item() == unconditional.item()


def test_cfg_needs_a_model_trained_with_dropout_and_labels():
    with pytest.raises(UserError, match="condition dropout"):
        tiny_ddpm().sample(2, guider=ClassifierFree(2.0))
    with pytest.raises(UserError, match="class_labels"):
        tiny_ddpm({"label": CLASS}).sample(2)


def test_image_i_depends_only_on_seed_and_index():
    model = tiny_ddpm()
    sampler = {"algorithm": "ddim", "steps": 5, "eta": 1.0}  # stochastic: per-step noise too
    whole = model.sample(6, sampler, seed=4).images
    parts = torch.cat([model.sample(2, sampler, seed=4, first_index=i).images for i in (0, 2, 4)])
    assert torch.equal(whole, parts)
    assert not torch.equal(whole, model.sample(6, sampler, seed=5).images)


def test_sampling_from_an_image_truncates_the_grid_and_calls_back_every_step():
    model = tiny_ddpm()
    init = torch.zeros(2, 1, 8, 8)
    calls = []
    sampler = {"algorithm": "ddim", "steps": 10}
    result = model.sample(2, sampler, seed=0, init=init, sigma_start=1.0,
                          callback=lambda i, sigma, x, x0: calls.append((i, sigma)))
    full = model.process.sigma_grid(10)
    kept = full[full <= 1.0]
    assert result.nfe == len(kept) - 1 == len(calls)
    assert [c[1] for c in calls] == pytest.approx(kept[1:].tolist())
    # a callback's return value replaces the state: forcing x̂0 = 0 after every step returns zeros
    zeros = model.sample(2, sampler, seed=0, callback=lambda i, sigma, x, x0: torch.zeros_like(x)).images
    assert torch.equal(zeros, torch.zeros_like(zeros))


def test_a_leading_grid_starts_from_the_marginal_at_its_first_sigma():
    process = DiscreteVP(num_timesteps=1000)
    first = float(process.sigma_grid(50, spacing="leading")[0])
    assert first < process.sigma_max
    assert process.start_std(first) == pytest.approx((1 + first**2) ** 0.5)
    assert process.start_std(first) < process.prior_std / 1.2  # the old start was ≥ 21 % too wide


def test_frozen_parts_stay_out_of_the_optimizer_and_are_shared_by_copies():
    model = tiny_ddpm()
    model.extra = Frozen(torch.nn.Linear(3, 3))
    model.train()
    assert not model.extra.training and not model.extra.module.training
    optimizer = model.configure_optimizers()
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(p) not in optimised for p in model.extra.parameters())
    twin = copy.deepcopy(model)
    assert twin.extra is model.extra and twin.network is not model.network


def test_clipping_is_the_models():
    edm = EDM(network=UNET, process={"_target_": "lit_diffusion.processes.EDMProcess"}, optimizer={}, sampler={},
              image_shape=[1, 8, 8], preconditioning={"_target_": "lit_diffusion.preconditioning.EDMPreconditioning"},
              objective={"_target_": "lit_diffusion.preconditioning.EDMObjective"})
    ddpm = tiny_ddpm()
    x, sigma = 50 * torch.randn(2, 1, 8, 8), torch.full((2,), 0.5)
    with torch.no_grad():
        assert ddpm.sampling_denoiser(x, sigma, {}).abs().max() <= 1
        assert edm.sampling_denoiser(x, sigma, {}).abs().max() > 1
