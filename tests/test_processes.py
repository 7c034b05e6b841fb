"""Closed forms of the discrete VP process (Ho et al. 2020, Eq. 2–7) and of the prediction targets."""

import math

import pytest
import torch

from lit_diffusion.errors import UserError
from lit_diffusion.parameterizations import predict_eps, predict_x0, training_target
from lit_diffusion.processes import DiscreteVP, cosine_betas, linear_betas


def test_alpha_bar_is_product_of_one_minus_beta():
    p = DiscreteVP(num_timesteps=1000, schedule="linear")
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    expected = math.prod(1 - b for b in betas[:500])
    assert p.alphas_cumprod[499].item() == pytest.approx(expected, rel=1e-12)
    assert p.betas[0].item() == pytest.approx(1e-4) and p.betas[-1].item() == pytest.approx(0.02)
    # DDPM's T = 1000 linear schedule ends with ᾱ_T ≈ 4.04e-5 (σ_T ≈ 157).
    assert p.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)


def test_cosine_schedule_follows_its_definition():
    T, s = 1000, 0.008
    p = DiscreteVP(num_timesteps=T, schedule="cosine", s=s)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 100, 500, 900):
        assert p.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert cosine_betas(T).max().item() <= 0.999
    assert torch.all(linear_betas(10) > 0)


def test_sigma_view_matches_alpha_bar():
    p = DiscreteVP(num_timesteps=100)
    a = p.alphas_cumprod
    torch.testing.assert_close(p.sigmas, ((1 - a) / a).sqrt())
    torch.testing.assert_close(p.scale(p.sigmas), a.sqrt())
    assert p.prior_std == pytest.approx(1 / a[-1].sqrt().item())


def test_q_sample_moments():
    p = DiscreteVP(num_timesteps=1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 0.7, dtype=torch.float64)
    t = torch.full((200_000,), 300)
    xt = p.q_sample(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    a = p.alphas_cumprod[300].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(a) * 0.7, abs=4 * math.sqrt((1 - a) / 200_000))
    assert xt.var().item() == pytest.approx(1 - a, rel=0.01)


def test_posterior_is_gaussian_conditioning_of_the_chain():
    """q(x_{t-1}|x_t, x_0) from the joint Gaussian of (x_{t-1}, x_t) given x_0, by Schur complement."""
    p = DiscreteVP(num_timesteps=50, schedule="cosine")
    t = torch.tensor([10, 30, 49])
    a_prev, a, beta = p.alphas_cumprod[t - 1], p.alphas_cumprod[t], p.betas[t]
    x0, xt = torch.tensor([[0.3], [-0.5], [1.0]], dtype=torch.float64), torch.tensor([[1.2], [0.1], [-2.0]], dtype=torch.float64)
    # x_{t-1} = √ā_prev x0 + √(1-ā_prev) z;  x_t = √(1-β) x_{t-1} + √β w
    var_prev = 1 - a_prev
    cov = (1 - beta).sqrt() * var_prev
    var_t = (1 - beta) * var_prev + beta
    mean_expected = a_prev.sqrt()[:, None] * x0 + (cov / var_t)[:, None] * (xt - a.sqrt()[:, None] * x0)
    var_expected = var_prev - cov**2 / var_t
    mean, var = p.posterior(x0, xt, t)
    torch.testing.assert_close(mean, mean_expected)
    torch.testing.assert_close(var, var_expected)


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
@pytest.mark.parametrize("ab", [(0.8, 0.6), (1.0, 3.0)])  # VP (a² + b² = 1) and VE (a = 1, b = σ)
def test_prediction_conversions_round_trip(kind, ab):
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    a, b = (torch.tensor(v, dtype=torch.float64) for v in ab)
    xt = a * x0 + b * eps
    target = training_target(kind, x0, eps, a, b)
    torch.testing.assert_close(predict_x0(kind, target, xt, a, b), x0)
    torch.testing.assert_close(predict_eps(kind, target, xt, a, b), eps)


def test_sigma_to_t_inverts_the_table_and_interpolates():
    p = DiscreteVP(num_timesteps=1000)
    t = torch.tensor([0, 1, 250, 999])
    torch.testing.assert_close(p.sigma_to_t(p.sigmas[t]), t.double())
    mid = (p.log_sigmas[10] + p.log_sigmas[11]) / 2
    assert p.sigma_to_t(mid.exp()).item() == pytest.approx(10.5, abs=1e-9)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "quad"])
def test_sigma_grid_decreases_to_zero(spacing):
    p = DiscreteVP(num_timesteps=1000)
    grid = p.sigma_grid(20, spacing=spacing)
    assert len(grid) == 21 and grid[-1] == 0
    assert torch.all(grid[:-1] > grid[1:])
    full = p.sigma_grid(None)
    torch.testing.assert_close(full[:-1], p.sigmas.flip(0))


def test_bad_grid_requests_are_user_errors():
    p = DiscreteVP(num_timesteps=100)
    with pytest.raises(UserError, match="between 1 and"):
        p.sigma_grid(500)
    with pytest.raises(UserError, match="spacing"):
        p.sigma_grid(10, spacing="cubic")
    with pytest.raises(UserError, match="schedule"):
        DiscreteVP(schedule="sigmoidal")


def test_scaled_linear_schedule_is_ldms():
    """LDM's "linear" schedule: √β linear in t (latent-diffusion's make_beta_schedule); the end points are the
    configured β's and the midpoint of √β is their mean."""
    p = DiscreteVP(1000, "scaled_linear", beta_start=0.0015, beta_end=0.0195)
    assert p.betas[0].item() == pytest.approx(0.0015) and p.betas[-1].item() == pytest.approx(0.0195)
    root = p.betas.sqrt()
    torch.testing.assert_close(root[1:] - root[:-1], torch.full((999,), (0.0195**0.5 - 0.0015**0.5) / 999,
                                                                  dtype=torch.float64))
