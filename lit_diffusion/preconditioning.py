"""Network preconditioning and training objectives of EDM (Karras et al. 2022, Table 1), in matched pairs.

The denoiser wraps a raw network F with four σ-dependent coefficients (Eq. 7),

    D_θ(x, σ) = c_skip(σ) x + c_out(σ) F_θ(c_in(σ) x, c_noise(σ)),

and is trained on L = E_{σ, y, n} λ(σ) ‖D_θ(y + n, σ) − y‖², n ~ N(0, σ² I) (Eq. 2, 8), with σ drawn from a
training distribution.  EDM's own pair makes the network's input and effective target unit-variance
(App. B.6); the VP and VE pairs re-express DDPM++ (Song et al. 2021, VP SDE) and NCSN++ (VE SDE) in the same
form, so one trainer covers the paper's ablations (Table 2, configs A–F).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
