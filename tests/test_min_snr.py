"""Min-SNR-γ loss weighting (Hang et al. 2023): with ``snr_gamma`` the DDPM objective, whatever the network
predicts, is the x_0 regression error weighted by min(SNR, γ) — checked on a model's own loss path."""

from __future__ import annotations

import pytest
import torch

from lit_diffusion.errors import UserError
from lit_diffusion.models import DDPM
from test_conditioning import UNET


def ddpm(prediction: str, snr_gamma) -> DDPM:
    torch.manual_seed(0)
    return DDPM(network=UNET, process={"_target_": "lit_diffusion.processes.DiscreteVP", "num_timesteps": 1000},
                optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
                sampler={"algorithm": "ddim", "steps": 5}, image_shape=[1, 8, 8], prediction=prediction,
                snr_gamma=snr_gamma).double()


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_weighted_loss_is_the_x0_error_weighted_by_min_snr_gamma(prediction):
    model = ddpm(prediction, snr_gamma=5.0)
    x0 = torch.rand(6, 1, 8, 8, dtype=torch.float64) * 2 - 1
    sigma = model.process.sigmas[torch.tensor([0, 20, 100, 300, 600, 999])]  # SNR from ≈ 10⁴ down to ≈ 4·10⁻⁵
    x = x0 + sigma.view(-1, 1, 1, 1) * torch.randn_like(x0)
    with torch.no_grad():
        per_item = torch.stack([model.regression_loss(model.predict(x[i:i + 1], sigma[i:i + 1]), x0[i:i + 1],
                                                      x[i:i + 1], sigma[i:i + 1]) for i in range(6)])
        x0_error = (model.denoise(x, sigma) - x0).pow(2).flatten(1).mean(1)
    snr = sigma**-2
    torch.testing.assert_close(per_item, snr.clamp(max=5.0) * x0_error, rtol=1e-9, atol=0)


def test_named_weights_of_the_paper():
    sigma = torch.tensor([0.05, 0.3, 1.0, 4.0], dtype=torch.float64)
    snr = sigma**-2
    expected = {"eps": snr.clamp(max=5) / snr, "x0": snr.clamp(max=5), "v": snr.clamp(max=5) / (snr + 1)}
    for prediction, weight in expected.items():
        torch.testing.assert_close(ddpm(prediction, 5.0).loss_weight(sigma), weight)
    assert ddpm("eps", None).loss_weight(sigma) == 1.0


def test_gamma_must_be_positive():
    with pytest.raises(UserError, match="snr_gamma"):
        ddpm("eps", 0.0)
