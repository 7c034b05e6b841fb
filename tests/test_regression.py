"""The refactored denoiser path reproduces the samples recorded before it (tests/data/regression_e1597fd.pt).

The fixture was written at commit e1597fd by ``tests/data/record_regression_e1597fd.py``: tiny networks of
ddpm_mnist (DDIM-50, x̂₀ clipped and not), edm_mnist (Heun, 35 NFE) and iddpm_mnist (ancestral-50 with the
learned variance), perturbed weights, a stored standard-normal start z and one seeded generator for the
per-step noise.  Here the same weights go through today's configs, preconditioning and ``generate``.
"""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from lit_diffusion.run import build_model
from lit_diffusion.sampling import generate

FIXTURE = torch.load(Path(__file__).parent / "data" / "regression_e1597fd.pt", weights_only=True)
TINY = ["network.base_channels=8", "network.channel_mult=[1,2]", "network.num_res_blocks=1",
        "network.attention_resolutions=[14]", "paths.output_dir=/tmp/unused"]


RECORDED = {"ddpm_mnist": ["model.prediction=eps"]}
"""Settings of the recording that experiments changed since: ddpm_mnist predicted ε at e1597fd (x₀ since issue 16)."""


@pytest.mark.parametrize("key", sorted(FIXTURE))
def test_samples_equal_the_pre_refactor_ones(key):
    record = FIXTURE[key]
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        experiment = key.removesuffix("_noclip")
        cfg = compose("config", overrides=[f"experiment={experiment}", *TINY, *RECORDED.get(experiment, [])])
    model = build_model(cfg).eval()
    model.network.load_state_dict(record["network"])
    model.clip = not key.endswith("noclip") and model.clip
    result = generate(lambda x, sigma: model.sampling_denoiser(x, sigma, {}), model.process, tuple(record["z"].shape),
                      model.hparams.sampler, generator=torch.Generator().manual_seed(3), noise=record["z"])
    assert result.nfe == record["nfe"]
    scale = max(1.0, record["images"].abs().max().item())
    torch.testing.assert_close(result.images, record["images"], rtol=0, atol=1e-5 * scale)
