"""Network preconditioning and training objectives of EDM (Karras et al. 2022, Table 1), in matched pairs.

The denoiser wraps a raw network F with four σ-dependent coefficients (Eq. 7),

    D_θ(x, σ) = c_skip(σ) x + c_out(σ) F_θ(c_in(σ) x, c_noise(σ)),

and is trained on L = E_{σ, y, n} λ(σ) ‖D_θ(y + n, σ) − y‖², n ~ N(0, σ² I) (Eq. 2, 8), with σ drawn from a
training distribution.  EDM's own pair makes the network's input and effective target unit-variance
(App. B.6); the VP and VE pairs re-express DDPM++ (Song et al. 2021, VP SDE) and NCSN++ (VE SDE) in the same
form, so one trainer covers the paper's ablations (Table 2, configs A–F).

Every framework's denoiser is its network under one of these objects (k-diffusion's ``external.py`` does the
same for foreign models): :class:`PredictionPreconditioning` recasts DDPM's and the score SDEs' ε / x_0 / v
networks, :class:`ScorePreconditioning` NCSN's score networks.  Training on the effective target
(x_0 − c_skip x)/c_out with weight λ c_out² is the same loss in the network's own units (EDM Eq. 8).
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import torch
from torch import Tensor

from lit_diffusion.parameterizations import check_prediction


class Preconditioning(Protocol):
    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise) for noise levels σ of shape (B,), in float64."""


class PredictionPreconditioning:
    """A network that predicts ε, x_0 or v of x_t = a x_0 + b ε with a = s(σ), b = σ s(σ) (DDPM, score SDEs).

    It sees c_in x = x_t and its time c_noise(σ); x̂_0 follows from its output F as
        ε:   x̂_0 = x − σ F                                    (c_skip = 1,           c_out = −σ),
        x_0: x̂_0 = F                                          (c_skip = 0,           c_out = 1),
        v:   x̂_0 = (a x_t − b F)/(a² + b²)                    (c_skip = 1/(1 + σ²),  c_out = −σ/(s (1 + σ²))),
    (Ho et al. 2020 Eq. 11; Salimans & Ho 2022 §4), i.e. :func:`lit_diffusion.parameterizations.predict_x0`.
    """

    def __init__(self, prediction: str, scale: Callable[[Tensor], Tensor], noise_cond: Callable[[Tensor], Tensor]):
        self.prediction = check_prediction(prediction)
        self.scale, self.noise_cond = scale, noise_cond

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        s = self.scale(sigma)
        if self.prediction == "eps":
            c_skip, c_out = torch.ones_like(sigma), -sigma
        elif self.prediction == "x0":
            c_skip, c_out = torch.zeros_like(sigma), torch.ones_like(sigma)
        else:
            c_skip, c_out = 1 / (1 + sigma**2), -sigma / (s * (1 + sigma**2))
        return c_skip, c_out, s, self.noise_cond(sigma)


class ScorePreconditioning:
    """NCSN's score network s_θ(x, σ) = F/σ (NCSNv2 Technique 3) or F (NCSN) as a denoiser by Tweedie's
    formula, D = x + σ² s_θ: c_skip = 1, c_out = σ (or σ²), c_in = 1, c_noise = ``noise_cond_scale`` · ln σ."""

    def __init__(self, scale_output: bool = True, noise_cond_scale: float = 250.0):
        self.scale_output, self.noise_cond_scale = scale_output, noise_cond_scale

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        c_out = sigma if self.scale_output else sigma**2
        return torch.ones_like(sigma), c_out, torch.ones_like(sigma), self.noise_cond_scale * sigma.log()


class RegressionPreconditioning:
    """A network that ignores its noisy input and the noise level: c_skip = 0, c_out = 1, c_in = 0, c_noise = 0,
    so D(x, σ | c) = F(0, 0 | c) — a feed-forward regression model seen as a (degenerate) denoiser, SR3's
    regression baseline (Saharia et al. 2021, §5.1).  Trained on ‖D − x_0‖² it predicts E[x_0 | c]; any sampler
    returns its output after one step."""

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        zeros = torch.zeros_like(sigma)
        return zeros, torch.ones_like(sigma), zeros, zeros


class EDMPreconditioning:
    """c_skip = σ_d²/(σ² + σ_d²), c_out = σ σ_d/√(σ² + σ_d²), c_in = 1/√(σ² + σ_d²), c_noise = ¼ ln σ."""

    def __init__(self, sigma_data: float = 0.5):
        self.sigma_data = sigma_data

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        sd2 = self.sigma_data**2
        total = sigma**2 + sd2
        return sd2 / total, sigma * self.sigma_data / total.sqrt(), 1 / total.sqrt(), sigma.log() / 4


class EDMObjective:
    """ln σ ~ N(P_mean, P_std²), λ(σ) = (σ² + σ_d²)/(σ σ_d)² = 1/c_out² (unit effective loss weight)."""

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 0.5):
        self.p_mean, self.p_std, self.sigma_data = p_mean, p_std, sigma_data

    def sample_sigma(self, batch: int, device: torch.device) -> Tensor:
        return (self.p_mean + self.p_std * torch.randn(batch, device=device, dtype=torch.float64)).exp()

    def weight(self, sigma: Tensor) -> Tensor:
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2


class VPPreconditioning:
    """DDPM++ / VP SDE: c_skip = 1, c_out = −σ, c_in = 1/√(σ² + 1), c_noise = (M − 1) σ⁻¹(σ) (ε-prediction)."""

    def __init__(self, beta_d: float = 19.9, beta_min: float = 0.1, num_timesteps: int = 1000):
        self.beta_d, self.beta_min, self.num_timesteps = beta_d, beta_min, num_timesteps

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t = ((self.beta_min**2 + 2 * self.beta_d * torch.log1p(sigma**2)).sqrt() - self.beta_min) / self.beta_d
        return torch.ones_like(sigma), -sigma, 1 / (sigma**2 + 1).sqrt(), (self.num_timesteps - 1) * t


class VPObjective:
    """t ~ U(ε_t, 1), σ(t) = √(exp(½β_d t² + β_min t) − 1), λ = 1/σ² (DDPM's L_simple on ε)."""

    def __init__(self, beta_d: float = 19.9, beta_min: float = 0.1, epsilon_t: float = 1e-5):
        self.beta_d, self.beta_min, self.epsilon_t = beta_d, beta_min, epsilon_t

    def sample_sigma(self, batch: int, device: torch.device) -> Tensor:
        t = self.epsilon_t + (1 - self.epsilon_t) * torch.rand(batch, device=device, dtype=torch.float64)
        return torch.expm1(0.5 * self.beta_d * t**2 + self.beta_min * t).sqrt()

    def weight(self, sigma: Tensor) -> Tensor:
        return 1 / sigma**2


class VEPreconditioning:
    """NCSN++ / VE SDE: c_skip = 1, c_out = σ, c_in = 1, c_noise = ln(σ/2)."""

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return torch.ones_like(sigma), sigma, torch.ones_like(sigma), (sigma / 2).log()


class VEObjective:
    """ln σ ~ U(ln σ_min, ln σ_max), λ = 1/σ² (NCSN's λ(σ) = σ² on the score)."""

    def __init__(self, sigma_min: float = 0.02, sigma_max: float = 100.0):
        self.log_min, self.log_max = math.log(sigma_min), math.log(sigma_max)

    def sample_sigma(self, batch: int, device: torch.device) -> Tensor:
        u = torch.rand(batch, device=device, dtype=torch.float64)
        return (self.log_min + (self.log_max - self.log_min) * u).exp()

    def weight(self, sigma: Tensor) -> Tensor:
        return 1 / sigma**2
