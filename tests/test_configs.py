"""Every experiment composes, resolves and builds its model (GPU-sized ones included, on CPU, untrained)."""

from __future__ import annotations

from importlib.resources import files

import pytest
from hydra import compose, initialize_config_module

from lit_diffusion.autoencoders.networks import build_autoencoder
from lit_diffusion.run import build_model

EXPERIMENTS = sorted(p.name[:-5] for p in files("lit_diffusion.configs").joinpath("experiment").iterdir()
                     if p.name.endswith(".yaml"))
REQUIRED = {"classifier_guidance_mnist": ["model.diffusion_checkpoint=null"],  # values the user must give (the file is read at build time)
            "sr3_celebahq_16_128": ["data.root=/tmp/unused"], "palette_imagenet_256": ["data.root=/tmp/unused"]}
# Latent experiments: a tiny random first stage of the config's kind, latent channels and downsampling factor stands
# in for the published one, and a narrow UNet of the config's shape for the paper-sized one.
FIRST_STAGES = {"ldm_celebahq": ("vq", 3, 3), "ldm_kl8_churches": ("kl", 4, 4), "ldm_mnist": ("kl", 3, 3),
                "ldm_txt2img_mnist": ("kl", 3, 3), "ldm_txt2img_laion": ("kl", 4, 4)}
# kind, latent channels, down blocks (f = 2^(blocks − 1))
NARROWED = {"ldm_txt2img_laion": ["text_encoder.width=32", "text_encoder.depth=1", "text_encoder.vocab_size=100"]}
"""A narrow stand-in for a paper-sized text encoder (LDM's 32 × 1280 transformer)."""


def first_stage_overrides(experiment: str, folder) -> list[str]:
    kind, channels, blocks = FIRST_STAGES[experiment]
    channels_in = 1 if experiment.endswith("mnist") else 3
    build_autoencoder(kind, {"in_channels": channels_in, "out_channels": channels_in, "block_out_channels": [8] * blocks,
                             "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": channels,
                             **({"num_vq_embeddings": 16} if kind == "vq" else {})}).save_pretrained(folder)
    return ["data.root=/tmp/unused", "first_stage=pretrained", f"first_stage.source.pretrained={folder}",
            "network.base_channels=8",
            "++network.num_head_channels=8", "network.num_heads=1", "network.num_groups=4"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_builds(experiment, tmp_path):
    overrides = REQUIRED.get(experiment, []) + NARROWED.get(experiment, [])
    if experiment in FIRST_STAGES:
        overrides += first_stage_overrides(experiment, tmp_path / "first_stage")
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}", "paths.output_dir=/tmp/unused", *overrides])
    assert cfg.name == experiment
    model = build_model(cfg)
    if "sampler" in model.hparams:  # diffusion models (autoencoder runs have none)
        assert model.hparams.sampler["algorithm"] == cfg.sampler.algorithm
    if experiment.endswith("cifar10"):
        assert model.sample_shape == (3, 32, 32)
        assert sum(p.numel() for p in model.network.parameters()) > 30e6  # paper-sized networks


def test_default_experiment_is_ddpm_mnist():
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=["paths.output_dir=/tmp/unused"])
    assert cfg.name == "ddpm_mnist" and cfg.data.variant == "bundled_5k"


def test_a_latent_experiment_without_data_and_first_stage_names_both(tmp_path):
    from cli import run_cli

    proc = run_cli("lit_diffusion.run", "experiment=ldm_celebahq", f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "'data.root', 'first_stage.source.ckpt' must be given" in proc.stderr
