"""Published diffusers pipelines → lit_diffusion checkpoints: parity with diffusers on small random models saved
with ``save_pretrained`` in the shapes of ``CompVis/ldm-celebahq-256`` (LDMPipeline: UNet2DModel + VQModel +
scaled-linear DDIM scheduler) and ``google/ddpm-cifar10-32`` (DDPMPipeline)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from diffusers import (DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, LDMPipeline, UNet2DModel,
                       VQModel)

from lit_diffusion.checkpoint import model_from_checkpoint
from lit_diffusion.conversion import convert_pipeline, save_model
from cli import run_cli

DDIM_50 = {"algorithm": "ddim", "steps": 50, "grid": {"spacing": "leading"}, "eta": 0.0}


def tiny_unet(size: int) -> UNet2DModel:
    return UNet2DModel(sample_size=size, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8)


def perturbed(module: torch.nn.Module) -> torch.nn.Module:
    """Random weights away from diffusers' zero initialisations, so every layer matters."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module


@pytest.fixture(scope="module")
def ldm_folder(tmp_path_factory):
    """An LDMPipeline folder like CompVis/ldm-celebahq-256: its vqvae/config.json has no scaling_factor."""
    torch.manual_seed(0)
    vqvae = perturbed(VQModel(in_channels=3, out_channels=3, latent_channels=3, num_vq_embeddings=32,
                              block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                              up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, sample_size=16))
    with torch.no_grad():
        vqvae.quantize.embedding.weight.normal_()  # codes at the latents' scale, so the scale factor matters
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195, clip_sample=False)
    folder = tmp_path_factory.mktemp("ldm") / "ldm-celebahq-tiny"
    LDMPipeline(vqvae=vqvae, unet=perturbed(tiny_unet(8)), scheduler=scheduler).save_pretrained(folder)
    config_path = folder / "vqvae" / "config.json"
    config = json.loads(config_path.read_text())
    del config["scaling_factor"]
    config_path.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory):
    """A DDPMPipeline folder like google/ddpm-cifar10-32 (linear β 1e-4 … 0.02, fixed_small, clipping)."""
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("ddpm") / "ddpm-cifar10-tiny"
    DDPMPipeline(unet=perturbed(tiny_unet(16)), scheduler=DDPMScheduler()).save_pretrained(folder)
    return folder


def pipeline_images(pipeline, seed: int = 0, **options) -> np.ndarray:
    pipeline.set_progress_bar_config(disable=True)
    return pipeline(batch_size=2, num_inference_steps=50, eta=0.0, generator=torch.Generator().manual_seed(seed),
                    output_type="np", **options).images


def our_images(model, shape, seed: int = 0) -> np.ndarray:
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed))  # the pipelines' draw
    with torch.no_grad():
        images = model.sample(2, DDIM_50, noise=noise).images
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def test_denoiser_equals_the_diffusers_unet_forward(ldm_folder):
    model = convert_pipeline(str(ldm_folder))
    unet = UNet2DModel.from_pretrained(ldm_folder, subfolder="unet").eval()
    scheduler = DDIMScheduler.from_pretrained(ldm_folder, subfolder="scheduler")
    t = torch.tensor([0, 250, 980, 999])
    xt = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    sigma = model.process.sigmas[t]
    with torch.no_grad():
        prediction = model.predict(xt / model.process.scale(sigma).float()[:, None, None, None], sigma)
        eps = unet(xt, t).sample
    assert (prediction.raw - eps).abs().max() < 1e-5
    a = scheduler.alphas_cumprod[t][:, None, None, None]
    x0 = (xt - (1 - a).sqrt() * eps) / a.sqrt()
    assert ((prediction.denoised - x0).abs() / x0.abs().clamp(min=1)).max() < 2e-4  # float32 ᾱ in diffusers


def test_ldm_ddim50_equals_ldm_pipeline_with_the_compvis_scale_factor(ldm_folder):
    model = convert_pipeline(str(ldm_folder))
    assert float(model.first_stage.module.scale_factor) == 1.0 and model.hparams.sampler["grid"] == {"spacing": "leading"}
    ours = our_images(model, model.sample_shape)
    pipeline = LDMPipeline.from_pretrained(ldm_folder)
    assert pipeline.vqvae.config.scaling_factor == pytest.approx(0.18215)  # diffusers' VQModel default
    corrupted = pipeline_images(pipeline)
    pipeline.vqvae.register_to_config(scaling_factor=1.0)
    assert np.abs(ours - pipeline_images(pipeline)).max() < 1e-4
    assert np.abs(ours - corrupted).max() > 0.05  # LDMPipeline's division by 0.18215 changes the images


def test_pixel_ddim50_equals_ddim_pipeline_and_the_ddpm_process(ddpm_folder):
    model = convert_pipeline(str(ddpm_folder))
    assert model.hparams.sampler == {"algorithm": "ancestral", "steps": None, "grid": {}, "variance": "posterior"}
    assert model.clip and model.first_stage is None
    scheduler = DDPMScheduler.from_pretrained(ddpm_folder, subfolder="scheduler")
    assert torch.allclose(model.process.betas.float(), scheduler.betas, atol=1e-8)
    unet = UNet2DModel.from_pretrained(ddpm_folder, subfolder="unet").eval()
    pipeline = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config))
    # Our DDIM step moves along ε recomputed from the clipped x̂_0; diffusers' does so with this option (by default
    # it pairs the clipped x̂_0 with the network's unclipped ε).
    images = pipeline_images(pipeline, seed=5, use_clipped_model_output=True)
    assert np.abs(our_images(model, model.sample_shape, seed=5) - images).max() < 1e-4


def test_convert_entry_writes_a_checkpoint_that_sample_reads(ldm_folder, tmp_path):
    out = tmp_path / "converted" / "ldm.ckpt"
    proc = run_cli("lit_diffusion.convert", f"source={ldm_folder}", f"out={out}", cwd=tmp_path)
    assert "LDMPipeline" in proc.stdout and out.is_file()
    model = model_from_checkpoint(out)  # weights_only, trusted targets only
    assert model.run_config["conversion"]["scale_factor"] == 1.0
    np.testing.assert_allclose(our_images(model, model.sample_shape),
                               our_images(convert_pipeline(str(ldm_folder)), model.sample_shape), atol=1e-6)
    run_cli("lit_diffusion.sample", f"ckpt={out}", "n=2", "sampler.steps=3", f"out={tmp_path / 'samples'}", cwd=tmp_path)
    assert (tmp_path / "samples" / "grid.png").is_file()


def test_convert_errors_are_one_message(tmp_path, ddpm_folder, monkeypatch):
    monkeypatch.setitem(os.environ, "HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(os.environ, "HF_HOME", str(tmp_path / "hf"))
    proc = run_cli("lit_diffusion.convert", "source=diffusers:CompVis/ldm-celebahq-256", f"out={tmp_path}/x.ckpt",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "hf download CompVis/ldm-celebahq-256" in proc.stderr and "source=/path/to/folder" in proc.stderr
    (ddpm_folder.parent / "other").mkdir(exist_ok=True)
    (ddpm_folder.parent / "other" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    proc = run_cli("lit_diffusion.convert", f"source={ddpm_folder.parent / 'other'}", f"out={tmp_path}/x.ckpt",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "convertible pipelines are DDPMPipeline" in proc.stderr
    assert not (tmp_path / "x.ckpt").exists()
