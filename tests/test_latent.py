"""Latent diffusion: any framework on the latents of a frozen first stage (tiny random autoencoders here)."""

import math
import shutil

import lightning as L
import pytest
import torch

from lit_diffusion.autoencoders.networks import build_autoencoder, decode, encode
from lit_diffusion.checkpoint import model_from_checkpoint
from lit_diffusion.errors import UserError
from lit_diffusion.likelihood import model_bits_per_dim, ode_log_likelihood, space_of
from lit_diffusion.models import DDPM, EDM

AE = {"in_channels": 1, "out_channels": 1, "block_out_channels": [8, 16], "layers_per_block": 1,
      "norm_num_groups": 4, "latent_channels": 2}
UNET = {"_target_": "lit_diffusion.networks.UNet", "in_channels": 2, "image_size": 4, "base_channels": 8,
        "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [], "num_groups": 4}


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    autoencoder = build_autoencoder("kl", AE)
    autoencoder.save_pretrained(tmp_path / "vae")
    return tmp_path / "vae"


def images(n=8, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def latent_ddpm(folder, **first_stage) -> DDPM:
    first_stage = {"source": {"pretrained": str(folder)}, "scale_by_std": True, **first_stage}
    if "scale_factor" in first_stage:
        first_stage.pop("scale_by_std")
    return DDPM(network=UNET, process={"_target_": "lit_diffusion.processes.DiscreteVP", "num_timesteps": 50},
                optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
                sampler={"algorithm": "ddim", "steps": 3}, image_shape=[1, 8, 8], first_stage=first_stage)


def test_the_network_works_on_latents_and_samples_are_decoded(folder):
    model = latent_ddpm(folder, scale_factor=0.5)
    assert model.sample_shape == (2, 4, 4) and not model.clip
    assert not any(p.requires_grad for p in model.first_stage.parameters())
    optimized = {id(p) for group in model.configure_optimizers().param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in model.first_stage.parameters()}
    out = model.sample(3, seed=1)
    assert out.images.shape == (3, 1, 8, 8)
    # the model's latents are the first stage's, scaled; its samples are the decoded latent samples
    autoencoder = model.first_stage.module.autoencoder
    x = images(4)
    torch.manual_seed(2)
    expected = 0.5 * encode(autoencoder, x)
    torch.manual_seed(2)
    torch.testing.assert_close(model.to_latent(x), expected)
    torch.testing.assert_close(model.from_latent(expected), decode(autoencoder, expected / 0.5).float())


def test_scale_by_std_fits_once_and_checkpoints_keep_it_without_the_source(folder, tmp_path):
    """1/std of the first batch's latents at step 0, not refitted later; the checkpoint rebuilds the first
    stage from its stored config (the source folder is gone) with the same factor and samples."""
    data = torch.utils.data.DataLoader([{"image": x} for x in images(32)], batch_size=8)
    model = latent_ddpm(folder)
    trainer = L.Trainer(max_steps=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    torch.manual_seed(5)
    first = 1 / encode(model.first_stage.module.autoencoder, images(32)[:8]).flatten().std()
    trainer.fit(model, data)
    factor = float(model.first_stage.module.scale_factor)
    assert factor == pytest.approx(float(first), rel=0.1)  # a fresh posterior sample, so not bit-equal
    assert bool(model.first_stage.module.fitted)
    trainer.save_checkpoint(tmp_path / "ldm.ckpt")
    shutil.rmtree(folder)
    loaded = model_from_checkpoint(tmp_path / "ldm.ckpt", "raw")
    assert float(loaded.first_stage.module.scale_factor) == factor
    model.eval()
    torch.testing.assert_close(loaded.sample(2, seed=3).images, model.sample(2, seed=3).images)


def test_every_framework_runs_on_latents(folder):
    edm = EDM(network=UNET, process={"_target_": "lit_diffusion.processes.EDMProcess"}, optimizer={},
              sampler={"algorithm": "heun", "steps": 3}, image_shape=[1, 8, 8],
              first_stage={"source": {"pretrained": str(folder)}, "scale_factor": 1.0},
              preconditioning={"_target_": "lit_diffusion.preconditioning.EDMPreconditioning"},
              objective={"_target_": "lit_diffusion.preconditioning.EDMObjective"})
    assert edm.batch_loss({"image": images(4)}, train=True).isfinite()
    assert edm.sample(2).images.shape == (2, 1, 8, 8)


def test_first_stage_needs_one_scale_rule_and_a_source(folder):
    common = {"network": UNET, "process": {"_target_": "lit_diffusion.processes.DiscreteVP"}, "optimizer": {},
              "sampler": {}, "image_shape": [1, 8, 8]}
    with pytest.raises(UserError, match="exactly one of scale_factor"):
        DDPM(**common, first_stage={"source": {"pretrained": str(folder)}, "scale_factor": 0.5, "scale_by_std": True})
    with pytest.raises(UserError, match="needs a source"):
        DDPM(**common, first_stage={"scale_factor": 1.0})


class EightByEight(L.LightningDataModule):
    def train_dataloader(self):
        return torch.utils.data.DataLoader([{"image": x} for x in images(32)], batch_size=8)


def test_cached_latents_train_as_encoded_ones_with_one_encoder_pass(folder, tmp_path):
    """cache_latents: the encoder runs once over the training images before step 0 (one batch of 32 here),
    never in training steps, and training matches the uncached run (the same posterior draws)."""
    weights, calls = {}, {}
    for cache in (False, True):
        torch.manual_seed(0)
        model = latent_ddpm(folder, scale_factor=0.5, cache_latents=cache)
        counter = []
        model.first_stage.module.autoencoder.encoder.register_forward_hook(lambda *_: counter.append(1))
        trainer = L.Trainer(max_steps=4, logger=False, enable_progress_bar=False, enable_model_summary=False,
                            enable_checkpointing=False, default_root_dir=tmp_path)
        trainer.fit(model, datamodule=EightByEight())
        weights[cache], calls[cache] = model.network.state_dict(), len(counter)
    assert calls == {False: 4, True: 1}
    for name, value in weights[False].items():
        torch.testing.assert_close(weights[True][name], value, atol=1e-5, rtol=1e-4)


def test_likelihood_of_a_latent_model_is_latent_bits_per_dim(folder):
    """bits/dim of a latent model: the PF-ODE log-likelihood of the scaled posterior-mode latents over the latent
    dimensions, with no dequantisation offset, and labelled as such."""
    model = latent_ddpm(folder, scale_factor=0.5).eval()
    x = images(2)
    with torch.no_grad():
        bpd, _ = model_bits_per_dim(model, x, generator=torch.Generator().manual_seed(0), rtol=1e-3, atol=1e-3)
        latents = 0.5 * encode(model.first_stage.module.autoencoder, x, sample=False)
        logp, _ = ode_log_likelihood(model.denoise, model.process, latents, generator=torch.Generator().manual_seed(0),
                                     rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(bpd, -logp / (2 * 4 * 4 * math.log(2)))
    assert space_of(model)["space"] == "latent" and space_of(model)["latent_shape"] == [2, 4, 4]
