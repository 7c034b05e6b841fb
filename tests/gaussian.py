"""Gaussian data with a closed-form denoiser, for checking samplers without a network.

For x_0 ~ N(μ, Σ) and x = x_0 + σ ε, the exact denoiser is
E[x_0 | x] = μ + Σ (Σ + σ² I)^{-1} (x − μ).
"""

from __future__ import annotations

import torch


class GaussianData:
    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        self.mean = mean.double()
        self.cov = cov.double()
        self.dim = mean.numel()

    @classmethod
    def example(cls, dim: int = 3, seed: int = 0) -> "GaussianData":
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(dim, dim, generator=g, dtype=torch.float64) * 0.4
        return cls(torch.linspace(-0.5, 0.5, dim, dtype=torch.float64), a @ a.T + 0.05 * torch.eye(dim, dtype=torch.float64))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        chol = torch.linalg.cholesky(self.cov)
        return self.mean + torch.randn(n, self.dim, generator=generator, dtype=torch.float64) @ chol.T

    def denoiser(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Exact D(x, σ) for inputs of shape (B, dim) or (B, C, H, W) with C*H*W == dim."""
        shape = x.shape
        flat = x.reshape(shape[0], -1).double()
        eye = torch.eye(self.dim, dtype=torch.float64)
        out = torch.empty_like(flat)
        for s in torch.unique(sigma):  # samplers use one σ per call; training losses draw one per sample
            rows = sigma == s
            gain = self.cov @ torch.linalg.inv(self.cov + float(s) ** 2 * eye)
            out[rows] = self.mean + (flat[rows] - self.mean) @ gain.T
        return out.to(x.dtype).reshape(shape)


def assert_moments_match(samples: torch.Tensor, data: GaussianData, mean_tol: float, cov_tol: float) -> None:
    """Mean within ``mean_tol`` (absolute) and covariance within ``cov_tol`` (max abs entry) of the data's."""
    samples = samples.reshape(samples.shape[0], -1).double()
    mean_err = (samples.mean(0) - data.mean).abs().max().item()
    cov_err = (torch.cov(samples.T) - data.cov).abs().max().item()
    assert mean_err < mean_tol, f"mean error {mean_err:.4f} ≥ {mean_tol}"
    assert cov_err < cov_tol, f"covariance error {cov_err:.4f} ≥ {cov_tol}"


class GaussianMixture:
    """Mixture Σ_k π_k N(μ_k, Σ_k): with x = x_0 + σ ε everything guidance needs is closed form —
    the class posterior r_k(x, σ) = p(y = k | x) ∝ π_k N(x; μ_k, Σ_k + σ² I), each component's denoiser, and
    the mixture's denoiser Σ_k r_k D_k."""

    def __init__(self, weights: torch.Tensor, components: list[GaussianData]):
        self.weights = weights.double()
        self.components = components
        self.dim = components[0].dim

    @classmethod
    def example(cls) -> "GaussianMixture":
        return cls(torch.tensor([0.7, 0.3]), [
            GaussianData(torch.tensor([-1.5, 0.5]), torch.tensor([[0.30, 0.10], [0.10, 0.20]])),
            GaussianData(torch.tensor([1.5, -0.5]), torch.tensor([[0.15, -0.05], [-0.05, 0.25]])),
        ])

    def class_log_posterior(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log p(y = k | x, σ) for every k: shape (B, K); differentiable in x."""
        flat = x.reshape(x.shape[0], -1).double()
        eye = torch.eye(self.dim, dtype=torch.float64)
        logs = []
        for w, c in zip(self.weights, self.components):
            cov = c.cov[None] + sigma.double().reshape(-1, 1, 1) ** 2 * eye
            dist = torch.distributions.MultivariateNormal(c.mean.expand(len(flat), -1), covariance_matrix=cov)
            logs.append(torch.log(w) + dist.log_prob(flat))
        return torch.log_softmax(torch.stack(logs, dim=1), dim=1)

    def log_prob_class(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.class_log_posterior(x, sigma).gather(1, labels[:, None]).squeeze(1).to(x.dtype)

    def denoiser(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        r = self.class_log_posterior(x, sigma).exp()
        out = sum(r[:, k, None] * c.denoiser(x, sigma).reshape(x.shape[0], -1).double()
                  for k, c in enumerate(self.components))
        return out.to(x.dtype).reshape(x.shape)
