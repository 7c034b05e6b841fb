"""Samplers against the exact denoiser of Gaussian data: their samples must have the data's moments.

10,000 samples in 3-D: the standard error of a covariance entry is ≈ 0.015, so the tolerances below
(mean 0.05, covariance 0.06 for the full chains) are ≈ 4 standard errors; few-step samplers carry an
extra discretisation error that must shrink as steps grow.
"""

import pytest
import torch

from gaussian import GaussianData, assert_moments_match
from lit_diffusion.errors import UserError
from lit_diffusion.processes import DiscreteVP
from lit_diffusion.sampling import generate

N = 10_000
DATA = GaussianData.example(dim=3)


def draw(process, sampler, seed=0):
    return generate(DATA.denoiser, process, (N, 3), sampler, generator=torch.Generator().manual_seed(seed))


def cov_error(samples):
    return (torch.cov(samples.double().T) - DATA.cov).abs().max().item()


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("variance", ["posterior", "forward"])
def test_full_ancestral_chain_reproduces_the_data(schedule, variance):
    result = draw(DiscreteVP(1000, schedule), {"algorithm": "ancestral", "variance": variance})
    assert result.nfe == 1000
    assert_moments_match(result.images, DATA, mean_tol=0.05, cov_tol=0.06)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_reproduces_the_data(eta):
    result = draw(DiscreteVP(1000), {"algorithm": "ddim", "steps": 500, "eta": eta})
    assert result.nfe == 500
    assert_moments_match(result.images, DATA, mean_tol=0.05, cov_tol=0.06)


def test_ddim_error_shrinks_with_steps():
    process = DiscreteVP(1000)
    errors = [cov_error(draw(process, {"algorithm": "ddim", "steps": s}).images) for s in (10, 25, 100)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.08


def test_respaced_ancestral_converges_with_steps():
    process = DiscreteVP(1000)
    errors = [cov_error(draw(process, {"algorithm": "ancestral", "steps": s}).images) for s in (20, 100, 1000)]
    assert errors[0] > errors[1] > errors[2], errors


def test_ddim_eta0_is_deterministic_given_the_prior_sample():
    process = DiscreteVP(100)
    a = draw(process, {"algorithm": "ddim", "steps": 10}, seed=3).images
    b = draw(process, {"algorithm": "ddim", "steps": 10}, seed=3).images
    c = draw(process, {"algorithm": "ddim", "steps": 10, "eta": 1.0}, seed=3).images
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_ddim_eta1_equals_posterior_ancestral():
    """η = 1 DDIM and posterior-variance ancestral sampling are the same Markov chain."""
    process = DiscreteVP(200)
    a = draw(process, {"algorithm": "ddim", "steps": 40, "eta": 1.0}, seed=5).images
    b = draw(process, {"algorithm": "ancestral", "steps": 40}, seed=5).images
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_clipping_is_not_a_sampler_option():
    """x̂₀ is clipped by the model (model.clip_denoised, tests/test_conditioning.py), never by the sampler."""
    with pytest.raises(UserError, match="has no option \\['clip_denoised'\\]"):
        generate(DATA.denoiser, DiscreteVP(100), (5, 3), {"algorithm": "ddim", "steps": 10, "clip_denoised": True})


def test_unknown_sampler_and_option_are_user_errors():
    with pytest.raises(UserError, match="unknown sampler algorithm 'heunn'"):
        draw(DiscreteVP(10), {"algorithm": "heunn"})
    with pytest.raises(UserError, match="has no option"):
        draw(DiscreteVP(10), {"algorithm": "ddim", "churn": 1.0})
    with pytest.raises(UserError, match="eta"):
        draw(DiscreteVP(10), {"algorithm": "ddim", "eta": 2.0})
