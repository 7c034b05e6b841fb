"""First-stage autoencoders: diffusers networks, loading from three formats, the taming/LDM objective, metrics,
training through Lightning (two optimizers) and one end-to-end run of ``experiment=ae_kl_mnist``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from lit_diffusion.autoencoders import (build_autoencoder, codebook_stats, decode, encode, latent_shape,
                                        load_first_stage, reconstruct, reconstruction_metrics)
from lit_diffusion.autoencoders.losses import (AutoencoderLoss, adaptive_weight, build_lpips, codebook_loss,
                                               hinge_d_loss, vanilla_d_loss)
from lit_diffusion.autoencoders.metrics import psnr_per_image, ssim_per_image
from lit_diffusion.callbacks import EMA
from lit_diffusion.checkpoint import CHECKPOINT_KEY, model_from_checkpoint
from lit_diffusion.errors import UserError
from lit_diffusion.metrics.images import dataset_split
from lit_diffusion.models import Autoencoder

REPO = Path(__file__).resolve().parents[1]
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3, "betas": [0.5, 0.9]}


def tiny_config(kind: str, levels: int = 3, channels: int = 3) -> dict:
    """f = 2^(levels − 1): [8, 16, 16] → f4, [8, 16, 16, 16] → f8."""
    config = {"in_channels": channels, "out_channels": channels, "block_out_channels": [8] + [16] * (levels - 1),
              "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": 4}
    if kind == "vq":
        config |= {"num_vq_embeddings": 32, "vq_embed_dim": 3}
    return config


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Perturb every parameter (norm scales and biases included) so that a wrong key mapping shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model.eval()


def images(n: int = 2, channels: int = 3, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        za, zb = encode(a, x, sample=False), encode(b, x, sample=False)
        return max((za - zb).abs().max().item(), (reconstruct(a, x) - reconstruct(b, x)).abs().max().item())


# --- networks --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["kl", "vq"])
@pytest.mark.parametrize("levels,f", [(3, 4), (4, 8)])
def test_build_encode_decode_shapes(kind, levels, f):
    config = tiny_config(kind, levels)
    model = build_autoencoder(kind, config).eval()
    x = images(2, size=16)
    z = encode(model, x)
    expected = latent_shape(kind, config, (3, 16, 16))
    assert expected == ((4 if kind == "kl" else 3), 16 // f, 16 // f)
    assert tuple(z.shape) == (2, *expected)
    assert decode(model, z).shape == x.shape


def test_kl_encode_samples_or_takes_the_mode():
    model = randomized(build_autoencoder("kl", tiny_config("kl")))
    x = images()
    posterior = model.encode(x).latent_dist
    torch.testing.assert_close(encode(model, x, sample=False), posterior.mean)
    torch.manual_seed(0)
    a = encode(model, x)
    torch.manual_seed(0)
    assert torch.equal(a, encode(model, x)) and not torch.allclose(a, posterior.mean)


def test_vq_encode_is_before_quantization_and_decode_quantizes():
    model = randomized(build_autoencoder("vq", tiny_config("vq")))
    x = images()
    z = encode(model, x)
    codebook = model.quantize.embedding.weight
    vectors = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    assert torch.cdist(vectors, codebook).min(1).values.max() > 1e-4  # not snapped to codes yet
    quantized, _, _ = model.quantize(z)
    with torch.no_grad():  # decode quantizes: z decodes as its codes do (up to the straight-through rounding)
        torch.testing.assert_close(decode(model, z), decode(model, quantized), atol=1e-5, rtol=0)
        unquantized = model.decode(z, force_not_quantize=True).sample
        assert (decode(model, z) - unquantized).abs().max() > 1e-3


def test_config_errors_are_user_errors():
    with pytest.raises(UserError, match="unknown autoencoder kind"):
        build_autoencoder("vae", tiny_config("kl"))
    with pytest.raises(UserError, match="unknown AutoencoderKL config keys.*z_channels"):
        build_autoencoder("kl", {**tiny_config("kl"), "z_channels": 4})
    with pytest.raises(UserError, match="not divisible"):
        latent_shape("kl", tiny_config("kl", 4), (3, 28, 28))


# --- loading -------------------------------------------------------------------------------------------
def to_compvis(state: dict, levels: int) -> dict:
    """diffusers → CompVis/LDM first-stage keys, written independently of diffusers' converter."""
    out = {}
    for key, value in state.items():
        new = key
        if ".mid_block.attentions.0." in key:
            new = (key.replace("mid_block.attentions.0.", "mid.attn_1.").replace("group_norm", "norm")
                   .replace("to_q", "q").replace("to_k", "k").replace("to_v", "v").replace("to_out.0", "proj_out"))
            if value.dim() == 2:
                value = value[:, :, None, None]
        new = re.sub(r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m[1]) + 1}", new)
        new = re.sub(r"encoder\.down_blocks\.(\d)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d)\.resnets\.",
                     lambda m: f"decoder.up.{levels - 1 - int(m[1])}.block.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d)\.upsamplers\.0\.",
                     lambda m: f"decoder.up.{levels - 1 - int(m[1])}.upsample.", new)
        new = new.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        assert new not in out, new
        out[new] = value.clone()
    return out


@pytest.mark.parametrize("kind,levels", [("kl", 4), ("vq", 3)])
def test_compvis_checkpoint_loads_with_parity(tmp_path, kind, levels):
    config = tiny_config(kind, levels)
    reference = randomized(build_autoencoder(kind, config))
    state = to_compvis(reference.state_dict(), levels)
    assert "encoder.mid.attn_1.q.weight" in state and "decoder.up.0.block.1.conv1.weight" in state
    if kind == "vq":
        assert "quantize.embedding.weight" in state
    state |= {"loss.logvar": torch.zeros(()), "loss.discriminator.main.0.weight": torch.randn(8, 3, 4, 4)}
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": state, "global_step": 7}, path)
    spec = load_first_stage({"compvis": str(path), "kind": kind, "config": config})
    assert spec.kind == kind and len(spec.sha256) == 64 and "CompVis" in spec.source
    assert max_diff(reference, spec.build(), images()) <= 1e-6


def test_compvis_problems_are_user_errors(tmp_path):
    config = tiny_config("kl")
    state = to_compvis(randomized(build_autoencoder("kl", config)).state_dict(), 3)
    extra = tmp_path / "extra.ckpt"
    torch.save({"state_dict": {**state, "encoder.down.1.attn.0.q.weight": torch.zeros(16, 16, 1, 1)}}, extra)
    with pytest.raises(UserError, match="no place.*attention"):
        load_first_stage({"compvis": str(extra), "kind": "kl", "config": config})
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": state}, good)
    with pytest.raises(UserError, match="do not fit"):
        load_first_stage({"compvis": str(good), "kind": "kl", "config": {**config, "latent_channels": 3}})
    with pytest.raises(UserError, match="does not exist"):
        load_first_stage({"compvis": str(tmp_path / "missing.ckpt"), "kind": "kl", "config": config})
    with pytest.raises(UserError, match="needs kind"):
        load_first_stage({"compvis": str(good), "config": config})


class NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "callbacks": {NotATensor: 1}}, path)
    with pytest.raises(UserError, match="cannot be read safely.*weights_only"):
        load_first_stage({"compvis": str(path), "kind": "kl", "config": tiny_config("kl")})


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_diffusers_folder_loads_with_parity(tmp_path, kind):
    config = tiny_config(kind)
    reference = randomized(build_autoencoder(kind, config))
    reference.save_pretrained(tmp_path / "model" / "vae")
    spec = load_first_stage({"pretrained": str(tmp_path / "model"), "subfolder": "vae"})
    assert spec.kind == kind  # from config.json's _class_name
    assert spec.config["block_out_channels"] == [8, 16, 16] and not any(k.startswith("_") for k in spec.config)
    assert max_diff(reference, spec.build(), images()) <= 1e-6
    other = "vq" if kind == "kl" else "kl"
    with pytest.raises(UserError, match=f"kind={other} was given"):
        load_first_stage({"pretrained": str(tmp_path / "model" / "vae"), "kind": other})
    with pytest.raises(UserError, match="no config.json"):
        load_first_stage({"pretrained": str(tmp_path / "model")})


def test_hub_id_without_network_is_one_user_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="lit-diffusion-tests/no-such-vae"):
        load_first_stage({"pretrained": "lit-diffusion-tests/no-such-vae", "subfolder": "vae"})
    with pytest.raises(UserError, match="exactly one of"):
        load_first_stage({"pretrained": "a/b", "ckpt": "x.ckpt"})
    with pytest.raises(UserError, match="unexpected"):
        load_first_stage({"pretrained": "a/b", "config": {}})


def test_other_lit_checkpoints_are_refused(tmp_path):
    path = tmp_path / "ddpm.ckpt"
    torch.save({CHECKPOINT_KEY: {"model_class": "lit_diffusion.models.ddpm.DDPM"}, "state_dict": {},
                "hyper_parameters": {}}, path)
    with pytest.raises(UserError, match="not of an autoencoder"):
        load_first_stage({"ckpt": str(path)})
    with pytest.raises(UserError, match="does not exist"):
        load_first_stage({"ckpt": str(tmp_path / "missing.ckpt")})


# --- training through Lightning ------------------------------------------------------------------------
def tiny_module(kind: str = "kl", **loss) -> Autoencoder:
    loss = {"perceptual_weight": 0.0, "disc_num_layers": 1, "disc_ndf": 8, **loss}
    return Autoencoder(kind, tiny_config(kind, channels=1), ADAM, [1, 16, 16], loss=loss, seed=0)


def fit(module: Autoencoder, steps: int, callbacks=(), root: Path | None = None, val: bool = False) -> L.Trainer:
    data = [{"image": image} for image in images(8, channels=1, seed=3)]
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1.0 if val else 0,
                        val_check_interval=steps if val else None,
                        enable_checkpointing=any(isinstance(c, L.pytorch.callbacks.ModelCheckpoint) for c in callbacks),
                        callbacks=list(callbacks), default_root_dir=root)
    loader = DataLoader(data, batch_size=4)
    trainer.fit(module, loader, loader if val else None)
    return trainer


class DiscriminatorWatch(L.Callback):
    def __init__(self):
        self.snapshots = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.snapshots.append([p.detach().clone() for p in pl_module.loss.discriminator.parameters()])


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_discriminator_starts_at_disc_start_and_steps_count_batches(kind):
    module = tiny_module(kind, disc_start=2)
    initial = [p.detach().clone() for p in module.loss.discriminator.parameters()]
    encoder_before = module.autoencoder.encoder.conv_in.weight.detach().clone()
    watch = DiscriminatorWatch()
    trainer = fit(module, 3, [watch])
    assert trainer.global_step == 3 and len(watch.snapshots) == 3  # one global step per batch, not per optimizer
    for step in (0, 1):  # steps 0 and 1 (< disc_start): the discriminator is not stepped
        assert all(torch.equal(a, b) for a, b in zip(initial, watch.snapshots[step]))
    assert not all(torch.equal(a, b) for a, b in zip(initial, watch.snapshots[2]))
    assert not torch.equal(encoder_before, module.autoencoder.encoder.conv_in.weight)


def test_validation_logs_reconstruction_and_codebook_metrics():
    module = Autoencoder("vq", tiny_config("vq", channels=1), ADAM, [1, 16, 16], val_rfid=True,
                         rfid_extractor="random_conv",
                         loss={"perceptual_weight": 0.0, "disc_num_layers": 1, "disc_ndf": 8, "disc_start": 0})
    metrics = fit(module, 2, val=True).callback_metrics
    assert {"val/psnr", "val/ssim", "val/rec_loss", "val/rfid", "val/codebook_usage", "val/perplexity",
            "train/perplexity", "train/d_weight", "train/disc_loss"} <= set(metrics)
    assert 0 < metrics["val/codebook_usage"] <= 1 and metrics["val/perplexity"] >= 1 and metrics["val/rfid"] > 0
    assert "_extractor" not in str(list(module.state_dict()))  # the extractor is not stored


def test_autoencoder_experiments_build():
    from hydra import compose, initialize_config_module

    from lit_diffusion.run import build_model

    shapes = {"ae_kl_mnist": ((1, 32, 32), (3, 8, 8)), "ae_vq_mnist": ((1, 32, 32), (3, 8, 8)),
              "vq_f4_celebahq": ((3, 256, 256), (3, 64, 64))}
    for experiment, (image_shape, latent) in shapes.items():
        with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
            cfg = compose("config", overrides=[f"experiment={experiment}", "paths.output_dir=/tmp/unused"])
        model = build_model(cfg)
        assert isinstance(model, Autoencoder) and model.image_shape == image_shape and model.latent_shape == latent
        assert cfg.callbacks.sample_grid is None and cfg.callbacks.evaluation is None
        assert cfg.trainer.gradient_clip_val is None
    assert model.autoencoder.config.num_vq_embeddings == 8192 and model.hparams.loss["disc_weight"] == 0.75


def test_adversarial_terms_are_zero_before_disc_start():
    loss = AutoencoderLoss("kl", 1, perceptual_weight=0.0, disc_start=5, disc_num_layers=1, disc_ndf=8)
    x, rec = images(2, 1), images(2, 1, seed=2)
    d_loss, _ = loss.discriminator_loss(x, rec, step=4)
    assert d_loss.item() == 0.0 and loss.discriminator_loss(x, rec, step=5)[0].item() > 0
    _, logs = loss.generator_loss(x, rec, torch.ones(2), step=4)
    assert "g_loss" not in logs


def test_lit_checkpoint_loads_ema_and_raw_weights_with_parity(tmp_path):
    module = tiny_module("kl", disc_start=1)
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_last=True)
    fit(module, 2, [EMA(decay=0.5), checkpoints], tmp_path)
    path = tmp_path / "last.ckpt"
    x = images(2, 1)
    raw = load_first_stage({"ckpt": str(path), "weights": "raw"})
    assert raw.kind == "kl" and raw.config["in_channels"] == 1 and "lit_diffusion checkpoint" in raw.source
    assert set(raw.state_dict) == set(module.autoencoder.state_dict())
    assert max_diff(module.autoencoder.eval(), raw.build(), x) <= 1e-6  # the trained weights
    ema = load_first_stage({"ckpt": str(path)})
    rebuilt = model_from_checkpoint(path)  # EMA weights by default
    assert isinstance(rebuilt, Autoencoder)
    assert max_diff(rebuilt.autoencoder, ema.build(), x) <= 1e-6
    assert max_diff(module.autoencoder, ema.build(), x) > 1e-4  # the average differs from the raw weights


# --- losses --------------------------------------------------------------------------------------------
def test_adaptive_weight_is_the_gradient_norm_ratio_at_the_last_layer():
    torch.manual_seed(0)
    decoder = nn.Linear(3, 5, bias=False)  # the "last layer": x̂ = W z
    z, x, d = torch.randn(3), torch.randn(5), torch.randn(5)
    rec = decoder(z)
    rec_loss = ((rec - x) ** 2).sum()
    g_loss = -(d * rec).sum()  # a linear discriminator D(x̂) = d·x̂
    weight = adaptive_weight(rec_loss, g_loss, decoder.weight)
    # ∇_W L_rec = 2 (Wz − x) zᵀ and ∇_W L_g = −d zᵀ, so the norms are products of vector norms.
    expected = 2 * (rec - x).norm() * z.norm() / (d.norm() * z.norm() + 1e-4)
    torch.testing.assert_close(weight, expected.detach())
    assert not weight.requires_grad


def test_generator_loss_uses_the_adaptive_weight():
    loss = AutoencoderLoss("vq", 1, perceptual_weight=0.0, disc_start=0, disc_weight=0.75, disc_num_layers=1,
                           disc_ndf=8)
    last = nn.Conv2d(2, 1, 3, padding=1)
    x, features = images(2, 1), torch.randn(2, 2, 16, 16)
    rec = last(features)
    total, logs = loss.generator_loss(x, rec, torch.tensor(0.3), step=0, last_layer=last.weight)
    nll = (x - rec).abs().mean()
    g = -loss.discriminator(rec).mean()
    weight = 0.75 * adaptive_weight(nll, g, last.weight)
    torch.testing.assert_close(logs["d_weight"], weight)
    torch.testing.assert_close(total, nll + 0.3 + weight * g)


def test_hinge_and_vanilla_losses_in_closed_form():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # hinge: real relu(1 − [2, .5]) = [0, .5], fake relu(1 + [−2, .5]) = [0, 1.5]; ½ (0.25 + 0.75)
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5)
    softplus = lambda t: torch.log1p(torch.exp(torch.tensor(t))).item()  # noqa: E731
    expected = 0.5 * ((softplus(-2.0) + softplus(-0.5)) / 2 + (softplus(-2.0) + softplus(0.5)) / 2)
    assert vanilla_d_loss(real, fake).item() == pytest.approx(expected)


def test_codebook_loss_weights_commitment_by_beta():
    z = torch.zeros(1, 1, 1, 1, requires_grad=True)
    codes = torch.ones(1, 1, 1, 1, requires_grad=True)
    codebook_loss(z, codes, beta=0.25).backward()
    # d/dz β(z − e)² = 2β(z − e) = −0.5; d/de (e − z)² = 2(e − z) = 2
    assert z.grad.item() == pytest.approx(-0.5) and codes.grad.item() == pytest.approx(2.0)
    z.grad = codes.grad = None
    codebook_loss(z, codes, beta=0.25, legacy=True).backward()
    assert z.grad.item() == pytest.approx(-2.0) and codes.grad.item() == pytest.approx(0.5)


def test_missing_lpips_weights_is_one_user_error_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match=r"vgg16-397923af\.pth.*" + re.escape(str(tmp_path))):
        build_lpips()
    with pytest.raises(UserError, match=r"lpips_weights=/nowhere/vgg\.pth does not exist"):
        build_lpips("/nowhere/vgg.pth")
    module = tiny_module("kl", perceptual_weight=1.0)  # building (or loading) the model does not need LPIPS
    with pytest.raises(UserError, match=r"vgg16-397923af\.pth"):
        module.loss.setup_perceptual()  # what on_fit_start calls


def test_lpips_reads_a_local_vgg16_file(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["D"])  # VGG16's convolutional part (random weights stand in for ImageNet's)
    path = tmp_path / "vgg16-397923af.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    lpips = build_lpips(path)
    assert lpips.backbone_layers == 13
    torch.testing.assert_close(getattr(lpips.net.net.slice5, "28").weight, features[28].weight)
    x, y = images(2, 1, 32), images(2, 1, 32, seed=5)
    assert lpips(x, x).abs().max() < 1e-6 and (lpips(x, y) > 0).all() and lpips(x, y).shape == (2,)


# --- metrics -------------------------------------------------------------------------------------------
def test_codebook_usage_and_perplexity():
    uniform = codebook_stats(torch.arange(16).repeat(3), 16)
    assert uniform["perplexity"] == pytest.approx(16) and uniform["codebook_usage"] == 1.0
    single = codebook_stats(torch.full((10,), 3), 16)
    assert single["perplexity"] == pytest.approx(1) and single["codebook_usage"] == 1 / 16
    half = codebook_stats(torch.arange(8).repeat(2), 16)
    assert half["perplexity"] == pytest.approx(8) and half["codebook_used"] == 8


def test_psnr_and_ssim_per_image():
    x = torch.rand(2, 1, 16, 16) - 0.5
    psnr = psnr_per_image(x, x + 0.2)  # 0.1 off on [0, 1]: MSE 0.01, 20 dB
    torch.testing.assert_close(psnr, torch.full((2,), 20.0))
    torch.testing.assert_close(ssim_per_image(x, x), torch.ones(2))


def test_reconstruction_metrics_of_a_vq_model():
    model = randomized(build_autoencoder("vq", tiny_config("vq", channels=1)))
    batches = [images(4, 1, seed=s) for s in range(3)]
    out = reconstruction_metrics(model, batches, extractor="random_conv", max_images=10)
    assert out["n"] == 10 and out["extractor"] == "random_conv"
    assert out["rfid"] > 0 and 0 < out["codebook_usage"] <= 1 and out["perplexity"] >= 1
    assert set(out) >= {"psnr", "psnr_std", "ssim", "ssim_std"}


# --- end to end ----------------------------------------------------------------------------------------
AE_TINY = [
    "data.batch_size=8",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "+trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "model.config.block_out_channels=[8,16,16]",
    "model.config.norm_num_groups=4",
    "model.loss.disc_start=1",
    "model.loss.disc_ndf=8",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "callbacks.reconstructions.every_n_steps=2",
    "callbacks.reconstructions.num_images=4",
]


@pytest.mark.slow
def test_ae_kl_mnist_end_to_end(tmp_path, monkeypatch):
    from cli import run_cli

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    run_dir = tmp_path / "run"
    run_cli("lit_diffusion.run", "experiment=ae_kl_mnist", *AE_TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert (run_dir / "samples" / "step_0000002.png").is_file() and (run_dir / "samples" / "final.png").is_file()
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    model = model_from_checkpoint(checkpoint)
    assert isinstance(model, Autoencoder) and model.latent_shape == (3, 8, 8)
    spec = load_first_stage({"ckpt": str(checkpoint)})
    assert max_diff(model.autoencoder, spec.build(), images(2, 1, 32)) <= 1e-6
    # evaluate on an autoencoder checkpoint: reconstruction quality of the validation split, with its protocol
    out = tmp_path / "eval.json"
    run_cli("lit_diffusion.evaluate", f"ckpt={checkpoint}", "n=16", "batch_size=8", "extractor=random_conv",
            f"out={out}", "csv=null", cwd=tmp_path)
    result = json.loads(out.read_text())
    assert result["n"] == 16 and result["split"] == "val" and "posterior's mode" in result["protocol"]
    data = model.run_config["data"]
    expected = reconstruction_metrics(model.autoencoder, [torch.stack([dataset_split(data, "val")[i]["image"]
                                                                        for i in range(16)])], extractor=None)
    assert result["summary"]["psnr"]["mean"] == pytest.approx(expected["psnr"], rel=1e-5)
    assert result["summary"]["ssim"]["mean"] == pytest.approx(expected["ssim"], rel=1e-5)
    assert np.isfinite(result["summary"]["rfid"]["mean"])
