"""Score-based family against closed forms: SDE marginals and priors, every (process, sampler) pair on
the exact denoiser of Gaussian data, the DSM minimum at the exact score, and PF-ODE likelihoods against the
exact Gaussian log-density.

Sampler tolerances (10,000 samples in 3-D, covariance entries up to 1.2): mean 0.05 and covariance 0.07,
≈ 4.5 standard errors, on grids fine enough that the discretisation error is below that.
"""

import math

import pytest
import torch

from gaussian import GaussianData, assert_moments_match
from lit_diffusion.errors import UserError
from lit_diffusion.likelihood import bits_per_dim, ode_log_likelihood
from lit_diffusion.models import NCSN, ScoreSDE
from lit_diffusion.processes import VESDE, VPSDE, DiscreteVP, SubVPSDE, VELadder
from lit_diffusion.samplers.langevin import ncsnv2_step_size, sample_langevin
from lit_diffusion.sampling import generate

DATA = GaussianData.example(dim=3)
N = 10_000

PROCESSES = {
    "vp": lambda: VPSDE(),
    "subvp": lambda: SubVPSDE(),
    "ve": lambda: VESDE(sigma_min=0.01, sigma_max=50.0),
    "ddpm": lambda: DiscreteVP(1000),
    "ncsn_ladder": lambda: VELadder(sigma_min=0.01, sigma_max=50.0, num_scales=200),
}
SAMPLERS = {
    "euler_maruyama": {"algorithm": "euler_maruyama", "steps": 500},
    "pc": {"algorithm": "pc", "steps": 300, "snr": 0.1},
    "ode": {"algorithm": "ode", "steps": 2},
    "ddim": {"algorithm": "ddim", "steps": 300},
    "ancestral": {"algorithm": "ancestral", "steps": 300},
    "heun": {"algorithm": "heun", "steps": 50, "grid": {"spacing": "karras"}},
    "heun_churn": {"algorithm": "heun", "steps": 100, "grid": {"spacing": "karras"}, "s_churn": 20.0},
    "euler": {"algorithm": "euler", "steps": 200, "grid": {"spacing": "karras"}},
    "dpm_solver": {"algorithm": "dpm_solver", "steps": 50, "grid": {"spacing": "karras"}},
}


@pytest.mark.parametrize("process", sorted(PROCESSES))
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_on_every_process_reproduces_gaussian_data(process, sampler):
    result = generate(DATA.denoiser, PROCESSES[process](), (N, 3), SAMPLERS[sampler],
                      generator=torch.Generator().manual_seed(0))
    assert_moments_match(result.images, DATA, mean_tol=0.05, cov_tol=0.07)
    assert result.nfe > 0


def _cov_error(process: str, sampler: dict) -> float:
    result = generate(DATA.denoiser, PROCESSES[process](), (N, 3), sampler, generator=torch.Generator().manual_seed(0))
    return (torch.cov(result.images.double().T) - DATA.cov).abs().max().item()


@pytest.mark.parametrize("process", ["vp", "ddpm", "ve"])
def test_second_order_solvers_beat_first_order_at_equal_nfe(process):
    """Same prior draws, ≈ 40 NFE on a Karras grid: Heun (2 NFE/step) and DPM-Solver++(2M) (1 NFE/step, second
    order through its multistep correction) are both more accurate than Euler; Heun's error falls ≥ 4× from
    10 to 30 steps (second order would give ≈ 9×; Euler's first order ≈ 3×)."""
    karras = {"grid": {"spacing": "karras"}}
    euler = _cov_error(process, {"algorithm": "euler", "steps": 40, **karras})
    heun = _cov_error(process, {"algorithm": "heun", "steps": 20, **karras})
    dpm = _cov_error(process, {"algorithm": "dpm_solver", "steps": 40, **karras})
    assert heun < euler and dpm < euler, (euler, heun, dpm)
    coarse = _cov_error(process, {"algorithm": "heun", "steps": 10, **karras})
    fine = _cov_error(process, {"algorithm": "heun", "steps": 30, **karras})
    assert fine < coarse / 4, (coarse, fine)


def test_dpm_solver_first_step_is_ddim_and_nfe_counts():
    """DPM-Solver++'s first step is first order: on a two-level grid it is exactly deterministic DDIM."""
    process = VPSDE()
    sigmas = process.sigma_grid(2)
    x = process.prior_std * torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    from lit_diffusion.samplers import sample_ddim, sample_dpm_solver
    torch.testing.assert_close(sample_dpm_solver(DATA.denoiser, x, sigmas, process=process),
                               sample_ddim(DATA.denoiser, x, sigmas, process=process, eta=0.0))
    for name, steps, nfe in (("dpm_solver", 20, 20), ("heun", 18, 35), ("euler", 18, 18)):
        assert generate(DATA.denoiser, process, (4, 3), {"algorithm": name, "steps": steps}).nfe == nfe


@pytest.mark.parametrize("process", ["ve", "ncsn_ladder"])
def test_annealed_langevin_converges_with_more_steps(process):
    """Annealed Langevin (defined on NCSN's geometric VE ladders) is biased for finite steps: the chain
    freezes once α_i is small.  The bias must shrink as the chain runs longer, and be small for a long one."""
    errors = []
    for steps_each in (2, 20, 200):
        result = generate(DATA.denoiser, PROCESSES[process](), (4000, 3),
                          {"algorithm": "langevin", "steps": 20, "steps_each": steps_each, "step_size": 1e-5},
                          generator=torch.Generator().manual_seed(0))
        errors.append((torch.cov(result.images.double().T) - DATA.cov).abs().max().item())
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.15


def test_langevin_at_one_level_samples_the_smoothed_density():
    """Plain Langevin at a fixed σ targets p_σ = N(μ, Σ + σ² I) (bias O(ε) for step ε)."""
    sigma = 0.5
    x = torch.randn(N, 3, generator=torch.Generator().manual_seed(1))
    out = sample_langevin(DATA.denoiser, x, torch.tensor([sigma, 0.0]), process=None,
                          generator=torch.Generator().manual_seed(2), steps_each=1500, step_size=0.02, denoise=False)
    target = GaussianData(DATA.mean, DATA.cov + sigma**2 * torch.eye(3, dtype=torch.float64))
    assert_moments_match(out, target, mean_tol=0.05, cov_tol=0.08)


def test_ncsnv2_step_size_rule():
    """NCSNv2's CIFAR-10 setting (L = 232 levels from 50 to 0.01, T = 5) gives their ε = 6.2e-6, and ε
    makes Eq. 6 of Song & Ermon (2020) as close to 1 as any nearby step size does."""
    gamma = (50 / 0.01) ** (1 / 231)
    eps = ncsnv2_step_size(gamma, 0.01, 5)
    assert eps == pytest.approx(6.2e-6, rel=0.1)

    def eq6(e):
        r = e / 0.01**2
        k = 2 * r / (1 - (1 - r) ** 2)
        return (1 - r) ** 10 * (gamma**2 - k) + k

    assert abs(eq6(eps) - 1) <= min(abs(eq6(eps * 0.8) - 1), abs(eq6(eps * 1.25) - 1))


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_sde_marginal_matches_simulation_of_the_forward_sde(name):
    sde = PROCESSES[name]()
    g = torch.Generator().manual_seed(0)
    x0 = 0.8
    x = torch.full((40_000,), x0, dtype=torch.float64)
    steps = 2000
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.tensor(i * dt, dtype=torch.float64)
        noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
        x = x + sde.drift(x, t) * dt + sde.diffusion(t) * math.sqrt(dt) * noise
    one, zero = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    m, std = sde.marginal(one)
    var = std**2 - (m * sde.std(zero)) ** 2  # simulation starts from a point mass at t = 0
    assert x.mean().item() == pytest.approx(m.item() * x0, abs=4 * math.sqrt(var.item() / len(x)) + 1e-3)
    assert x.var().item() == pytest.approx(var.item(), rel=0.03)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_sigma_time_round_trip_and_prior(name):
    sde = PROCESSES[name]()
    t = torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(sde.t_from_sigma(sde.sigma(t)), t)
    torch.testing.assert_close(sde.scale(sde.sigma(t)), sde.mean_coef(t))
    z = torch.randn(7, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sde.prior_std_sde
    expected = torch.distributions.Normal(0.0, sde.prior_std_sde).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), expected)


class ExactEps(torch.nn.Module):
    """ε̂(x_t, t) of Gaussian data for an SDE, as a network with the UNet's signature (noise input = 999 t)."""

    def __init__(self, sde, factor: float = 1.0):
        super().__init__()
        self.sde, self.factor = sde, factor

    def forward(self, xt, cond, labels=None):
        t = (cond.double() / 999.0)[0]
        m, std = self.sde.marginal(t)
        x0 = DATA.denoiser(xt / m, torch.full((xt.shape[0],), float(std / m)))
        return self.factor * (xt - m * x0) / std


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_dsm_loss_is_minimal_at_the_exact_score(name):
    process = {"vp": {"_target_": "lit_diffusion.processes.VPSDE"}, "subvp": {"_target_": "lit_diffusion.processes.SubVPSDE"},
               "ve": {"_target_": "lit_diffusion.processes.VESDE", "sigma_min": 0.01, "sigma_max": 50.0}}[name]
    model = ScoreSDE(network={"_target_": "torch.nn.Identity"}, process=process, optimizer={}, sampler={}, image_shape=[3])
    x0 = DATA.sample(4000, torch.Generator().manual_seed(3)).float()
    losses = {}
    for factor in (0.9, 1.0, 1.1):
        model.network = ExactEps(model.process, factor)
        torch.manual_seed(0)
        # one t per batch (the exact network takes a scalar time): average over a few batches
        losses[factor] = sum(_loss_at_one_time(model, x0, seed) for seed in range(8))
    assert losses[1.0] < losses[0.9] and losses[1.0] < losses[1.1], losses


def _loss_at_one_time(model, x0, seed):
    """The model's loss (shared path: preconditioning, effective target, weight) at one time t."""
    t = torch.full((x0.shape[0],), 0.05 + 0.1 * seed, dtype=torch.float64)
    m, std = model.process.marginal(t)
    sigma = std / m
    x = x0 + sigma[:, None].float() * torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    return model.regression_loss(model.predict(x, sigma), x0, x, sigma).item()


class ExactScore(torch.nn.Module):
    """NCSN's score network for Gaussian data: F(x, 250 log σ) = factor · ∇log p_σ(x) = factor (D(x, σ) − x)/σ²."""

    def __init__(self, factor: float = 1.0):
        super().__init__()
        self.factor = factor

    def forward(self, x, noise_cond, cond=None):
        sigma = (noise_cond.double() / 250).exp()
        return self.factor * (DATA.denoiser(x, sigma) - x) / sigma[:, None].to(x.dtype) ** 2


def test_ncsn_dsm_minimum_and_denoiser_identity():
    """NCSN's preconditioning turns the exact score into the exact denoiser (Tweedie), and the DSM loss of the
    shared path is smallest at the exact score."""
    model = NCSN(network={"_target_": "torch.nn.Identity"}, process={"_target_": "lit_diffusion.processes.VELadder"},
                 optimizer={}, sampler={}, image_shape=[3], scale_output=False)
    x = torch.randn(5, 3)
    sigma = torch.full((5,), 0.3)
    model.network = ExactScore()
    torch.testing.assert_close(model.denoise(x, sigma), DATA.denoiser(x, sigma))
    x0 = DATA.sample(4000, torch.Generator().manual_seed(4)).float()
    losses = []
    for factor in (0.9, 1.0, 1.1):
        model.network = ExactScore(factor)
        torch.manual_seed(0)
        losses.append(model.loss(x0).item())
    assert losses[1] < losses[0] and losses[1] < losses[2], losses


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "ddpm"])
def test_probability_flow_likelihood_matches_the_exact_gaussian_density(name):
    process = {"vp": VPSDE(t_min=1e-5), "subvp": SubVPSDE(t_min=1e-5), "ve": VESDE(0.001, 50.0, t_min=1e-5),
               "ddpm": DiscreteVP(1000)}[name]
    x = DATA.sample(300, torch.Generator().manual_seed(1))
    exact = torch.distributions.MultivariateNormal(DATA.mean, DATA.cov).log_prob(x)
    logp, nfe = ode_log_likelihood(DATA.denoiser, process, x.float(), trace="exact")
    assert (logp.double() - exact).abs().max().item() < 0.05
    assert nfe > 10
    hutch, _ = ode_log_likelihood(DATA.denoiser, process, x.float(), trace="rademacher",
                                  generator=torch.Generator().manual_seed(0))
    assert abs((hutch.double() - exact).mean().item()) < 0.2  # unbiased: per-sample noise averages out


def test_bits_per_dim_is_the_dequantised_density_in_bits():
    """A uniform-noise check: with dequantize=False the bpd is −log p/(D ln 2) + 7 exactly."""
    x = DATA.sample(50, torch.Generator().manual_seed(2)).float()
    logp, _ = ode_log_likelihood(DATA.denoiser, VPSDE(t_min=1e-5), x, trace="exact")
    bpd, _ = bits_per_dim(DATA.denoiser, VPSDE(t_min=1e-5), x, dequantize=False, trace="exact")
    torch.testing.assert_close(bpd, -logp / (3 * math.log(2)) + 7)


def test_sde_samplers_refuse_processes_without_an_sde():
    with pytest.raises(UserError, match="no VP-SDE limit"):
        generate(DATA.denoiser, DiscreteVP(100, "cosine"), (10, 3), {"algorithm": "euler_maruyama"})
    with pytest.raises(UserError, match="sampler.grid"):
        generate(DATA.denoiser, VPSDE(), (10, 3), {"algorithm": "ddim", "steps": 10, "grid": {"spacing": "quad"}})
