"""Every experiment composes, resolves and builds its model (GPU-sized ones included, on CPU, untrained)."""

from __future__ import annotations

from importlib.resources import files

import pytest
from hydra import compose, initialize_config_module

from lit_diffusion.run import build_model

EXPERIMENTS = sorted(p.name[:-5] for p in files("lit_diffusion.configs").joinpath("experiment").iterdir()
                     if p.name.endswith(".yaml"))
REQUIRED = {"classifier_guidance_mnist": ["model.diffusion_checkpoint=null"]}  # values the user must give (the file is read at build time)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_builds(experiment):
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}", "paths.output_dir=/tmp/unused",
                                           *REQUIRED.get(experiment, [])])
    assert cfg.name == experiment
    model = build_model(cfg)
    assert model.hparams.sampler["algorithm"] == cfg.sampler.algorithm
    if experiment.endswith("cifar10"):
        assert model.image_shape == (3, 32, 32)
        assert sum(p.numel() for p in model.network.parameters()) > 30e6  # paper-sized networks


def test_default_experiment_is_ddpm_mnist():
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=["paths.output_dir=/tmp/unused"])
    assert cfg.name == "ddpm_mnist" and cfg.data.variant == "bundled_5k"
