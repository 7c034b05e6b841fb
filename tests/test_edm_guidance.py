"""EDM preconditioning against its design identities, and guidance against closed forms: classifier-free
guidance at w = 0 / 1 is the unconditional / conditional sampler; classifier guidance with a zero gradient is
unguided, and with the exact classifier of a Gaussian mixture (s = 1) it samples the chosen component
(Bayes: ∇log p(x) + ∇log p(y | x) = ∇log p(x | y))."""


import pytest
import torch

from gaussian import GaussianMixture, assert_moments_match
from lit_diffusion.guidance import ClassifierFree, ClassifierGuidance
from lit_diffusion.models import EDM
from lit_diffusion.preconditioning import (EDMObjective, EDMPreconditioning, VEPreconditioning, VPObjective,
                                           VPPreconditioning)
from lit_diffusion.processes import VPSDE, EDMProcess
from lit_diffusion.processes.base import karras_sigmas
from lit_diffusion.sampling import generate

MIXTURE = GaussianMixture.example()
SIGMAS = torch.tensor([0.002, 0.05, 0.5, 1.0, 5.0, 80.0], dtype=torch.float64)


def test_edm_preconditioning_gives_unit_variance_input_and_target():
    """Karras et al. App. B.6: with Var(y) = σ_d², Var(c_in (y + n)) = 1 and the effective target
    F* = (y − c_skip (y + n))/c_out has unit variance; λ c_out² = 1 (Eq. 8's effective weight)."""
    sigma_data = 0.5
    pre, obj = EDMPreconditioning(sigma_data), EDMObjective(sigma_data=sigma_data)
    g = torch.Generator().manual_seed(0)
    for sigma in SIGMAS:
        y = sigma_data * torch.randn(200_000, generator=g, dtype=torch.float64)
        x = y + sigma * torch.randn(200_000, generator=g, dtype=torch.float64)
        c_skip, c_out, c_in, _ = pre.coefficients(sigma)
        assert (c_in * x).var().item() == pytest.approx(1.0, rel=0.02)
        assert ((y - c_skip * x) / c_out).var().item() == pytest.approx(1.0, rel=0.02)
        assert (obj.weight(sigma) * c_out**2).item() == pytest.approx(1.0)


def test_vp_and_ve_pairs_are_ddpm_and_ncsn_in_edm_form():
    """VP: c_noise/999 is the VP SDE's t(σ) and the objective's σ(t) its σ; c_in x = the VP sample x_t.
    VE: D = x + σ F, i.e. F is −ε."""
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    c_skip, c_out, c_in, c_noise = VPPreconditioning().coefficients(SIGMAS)
    torch.testing.assert_close(c_noise / 999, sde.t_from_sigma(SIGMAS))
    torch.testing.assert_close(c_in, sde.scale(SIGMAS))
    assert torch.all(c_skip == 1) and torch.all(c_out == -SIGMAS)
    t = torch.tensor([1e-5, 0.3, 1.0], dtype=torch.float64)
    obj = VPObjective()
    torch.testing.assert_close(torch.expm1(0.5 * obj.beta_d * t**2 + obj.beta_min * t).sqrt(), sde.sigma(t))
    _, c_out, c_in, c_noise = VEPreconditioning().coefficients(SIGMAS)
    assert torch.all(c_out == SIGMAS) and torch.all(c_in == 1)
    torch.testing.assert_close(c_noise, (SIGMAS / 2).log())


def test_edm_objective_draws_log_normal_sigmas():
    s = EDMObjective().sample_sigma(100_000, torch.device("cpu")).log()
    assert s.mean().item() == pytest.approx(-1.2, abs=0.02) and s.std().item() == pytest.approx(1.2, abs=0.02)


def test_karras_schedule_and_edm_process():
    sigmas = EDMProcess().sigma_grid()
    assert len(sigmas) == 19 and sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[-2].item() == pytest.approx(0.002)
    i = torch.arange(18, dtype=torch.float64)
    expected = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7  # Karras et al., Eq. 5
    torch.testing.assert_close(sigmas[:-1], expected)
    torch.testing.assert_close(karras_sigmas(5, 1.0, 3.0, rho=1.0)[:-1], torch.linspace(3, 1, 5, dtype=torch.float64))


class _ExactNetwork(torch.nn.Module):
    """A 'network' that, behind EDM's preconditioning, makes D the exact denoiser of the mixture."""

    def __init__(self, pre):
        super().__init__()
        self.pre = pre

    def forward(self, x_in, c_noise, cond=None):
        sigma = (4 * c_noise.double()).exp()
        c_skip, c_out, c_in, _ = (c.reshape(-1, 1) for c in self.pre.coefficients(sigma))
        x = x_in / c_in
        return (MIXTURE.denoiser(x, sigma) - c_skip * x) / c_out


def test_edm_loss_is_minimal_at_the_exact_denoiser():
    model = EDM(network={"_target_": "torch.nn.Identity"}, process={"_target_": "lit_diffusion.processes.EDMProcess"},
                optimizer={}, sampler={}, image_shape=[2, 1, 1],
                preconditioning={"_target_": "lit_diffusion.preconditioning.EDMPreconditioning"},
                objective={"_target_": "lit_diffusion.preconditioning.EDMObjective"})
    x0 = torch.cat([c.sample(n, torch.Generator().manual_seed(k))  # the mixture's own weights, 0.7 / 0.3
                    for k, (c, n) in enumerate(zip(MIXTURE.components, (2100, 900)))])
    losses = {}
    for name, shift in (("exact", 0.0), ("perturbed", 0.1)):
        network = _ExactNetwork(model.preconditioning)
        model.network = torch.nn.Module()
        model.network.forward = lambda x, c, y=None, net=network, s=shift: net(x, c) + s
        torch.manual_seed(0)
        losses[name] = model.loss(x0.float()).item()
    assert losses["exact"] < losses["perturbed"]


def _mixture_denoiser(x, sigma, cond):
    """D(x, σ | label) of the mixture: the component's denoiser, or the mixture's for the null label −1."""
    labels = cond["label"]
    out = MIXTURE.denoiser(x, sigma).clone()
    for k, component in enumerate(MIXTURE.components):
        rows = labels == k
        if rows.any():
            out[rows] = component.denoiser(x[rows], sigma[rows])
    return out


def _labels(n, k):
    return {"label": torch.full((n,), k, dtype=torch.long)}


@pytest.mark.parametrize("sampler", [{"algorithm": "heun", "steps": 20}, {"algorithm": "ddim", "steps": 20, "eta": 1.0}])
def test_classifier_free_guidance_at_zero_and_one(sampler):
    process = EDMProcess()
    cond, uncond = _labels(256, 1), _labels(256, -1)
    for scale, expected in ((0.0, MIXTURE.denoiser), (1.0, MIXTURE.components[1].denoiser)):
        guided = generate(ClassifierFree(scale).denoiser(_mixture_denoiser, cond, uncond, cond), process, (256, 2),
                          sampler, generator=torch.Generator().manual_seed(0)).images
        plain = generate(expected, process, (256, 2), sampler, generator=torch.Generator().manual_seed(0)).images
        torch.testing.assert_close(guided, plain, rtol=1e-5, atol=1e-5)


def _classifier_guided(log_prob, labels, scale):
    cond = {"label": labels}
    classifier = type("Exact", (), {"log_prob": staticmethod(log_prob)})()
    return ClassifierGuidance(classifier, scale).denoiser(lambda x, sigma, c: MIXTURE.denoiser(x, sigma), {}, None, cond)


def test_classifier_guidance_with_a_zero_gradient_is_unguided():
    labels = torch.zeros(256, dtype=torch.long)
    constant = lambda x, sigma, y: 0.0 * x.sum(dim=1) + 1.0  # noqa: E731
    sampler = {"algorithm": "dpm_solver", "steps": 20}
    guided = generate(_classifier_guided(constant, labels, 5.0), EDMProcess(), (256, 2), sampler,
                      generator=torch.Generator().manual_seed(0)).images
    plain = generate(MIXTURE.denoiser, EDMProcess(), (256, 2), sampler, generator=torch.Generator().manual_seed(0)).images
    torch.testing.assert_close(guided, plain)


@pytest.mark.parametrize("component", [0, 1])
def test_exact_classifier_guidance_samples_the_chosen_component(component):
    """s = 1 with the exact classifier turns the mixture's score into the component's: its moments (4,000 samples,
    mean 0.05 / covariance 0.05, ≥ 5 standard errors); scale 3 puts ≥ 99 % of samples nearer the chosen mean."""
    n = 4000
    labels = torch.full((n,), component, dtype=torch.long)
    sampler = {"algorithm": "heun", "steps": 25}
    out = generate(_classifier_guided(MIXTURE.log_prob_class, labels, 1.0), EDMProcess(),
                   (n, 2), sampler, generator=torch.Generator().manual_seed(0)).images
    assert_moments_match(out, MIXTURE.components[component], mean_tol=0.05, cov_tol=0.05)
    strong = generate(_classifier_guided(MIXTURE.log_prob_class, labels[:1000], 3.0), EDMProcess(),
                      (1000, 2), sampler, generator=torch.Generator().manual_seed(1)).images.double()
    distances = torch.stack([(strong - c.mean).norm(dim=1) for c in MIXTURE.components], dim=1)
    assert (distances.argmin(1) == component).double().mean().item() > 0.99
