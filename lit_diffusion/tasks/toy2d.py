"""DDIB on 2-D synthetic pairs (Su et al. 2023, §5.1): moons, checkerboard and concentric rings.

Each domain gets its own model, fitted separately on its own samples: a Gaussian mixture (K components, EM)
whose denoiser is exact, D(x, σ) = Σ_k r_k(x, σ) (μ_k + Σ_k (Σ_k + σ² I)⁻¹ (x − μ_k)) with
r_k ∝ π_k N(x; μ_k, Σ_k + σ² I), so the probability-flow ODEs that :func:`lit_diffusion.tasks.ddib` integrates
are those of the fitted densities and only the solver errs.  Reported per pair and number of ODE steps:
the cycle-consistency error (source → target → source, mean L2) and the MMD² (RBF kernels) of the
translations to fresh target samples, beside the MMD² of the untranslated sources and of a second target
sample (the floor)::

    python -m lit_diffusion.tasks.toy2d [--n 2000] [--steps 5 10 20 50 100] [--sampler ddim] [--plot PNG]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from torch import Tensor

from lit_diffusion.processes.discrete_vp import DiscreteVP
from lit_diffusion.tasks.ddib import ddib


def moons(n: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """Two interleaving half circles (scikit-learn's ``make_moons``), centred."""
    outer, inner = n // 2, n - n // 2
    t_out, t_in = rng.uniform(0, math.pi, outer), rng.uniform(0, math.pi, inner)
    points = np.concatenate([np.stack([np.cos(t_out), np.sin(t_out)], 1),
                             np.stack([1 - np.cos(t_in), 0.5 - np.sin(t_in)], 1)])
    return points + noise * rng.standard_normal(points.shape) - np.array([0.5, 0.25])


def checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """The 4 × 4 checkerboard of FFJORD's toy data (half the cells), on [-2, 2]²."""
    x1 = rng.uniform(-2, 2, n)
    x2 = rng.uniform(0, 1, n) - 2 * rng.integers(0, 2, n) + np.floor(x1) % 2
    return np.stack([x1, x2], 1)


def rings(n: int, rng: np.random.Generator, noise: float = 0.04) -> np.ndarray:
    """Two concentric circles of radii 1.5 and 0.75 (scikit-learn's ``make_circles`` with factor 0.5)."""
    radius = np.where(rng.integers(0, 2, n) == 0, 1.5, 0.75)
    angle = rng.uniform(0, 2 * math.pi, n)
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    return points + noise * rng.standard_normal(points.shape)


DATASETS = {"moons": moons, "checkerboard": checkerboard, "rings": rings}


class GaussianMixtureModel:
    """A Gaussian mixture fitted by EM (k-means++ start), with the exact denoiser of its density."""

    def __init__(self, data: np.ndarray, components: int = 48, iterations: int = 200, seed: int = 0,
                 regularization: float = 1e-3):
        rng = np.random.default_rng(seed)
        n, dim = data.shape
        means = [data[rng.integers(n)]]
        for _ in range(components - 1):  # k-means++ seeding
            distance = np.min(((data[:, None] - np.array(means)[None]) ** 2).sum(-1), 1)
            means.append(data[rng.choice(n, p=distance / distance.sum())])
        means = np.array(means)
        covs = np.tile(np.cov(data.T) / components, (components, 1, 1))
        weights = np.full(components, 1 / components)
        for _ in range(iterations):
            log_r = self._log_joint(data, weights, means, covs)
            r = np.exp(log_r - log_r.max(1, keepdims=True))
            r /= r.sum(1, keepdims=True)
            counts = r.sum(0) + 1e-10
            weights = counts / n
            means = (r.T @ data) / counts[:, None]
            centred = data[:, None] - means[None]
            covs = np.einsum("nk,nki,nkj->kij", r, centred, centred) / counts[:, None, None]
            covs += regularization * np.eye(dim)
        self.weights, self.means, self.covs = (torch.from_numpy(a) for a in (weights, means, covs))

    @staticmethod
    def _log_joint(x: np.ndarray, weights, means, covs) -> np.ndarray:
        inv, (_, logdet) = np.linalg.inv(covs), np.linalg.slogdet(covs)
        centred = x[:, None] - means[None]
        maha = np.einsum("nki,kij,nkj->nk", centred, inv, centred)
        return np.log(weights + 1e-300) - 0.5 * (maha + logdet + x.shape[1] * math.log(2 * math.pi))

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)[k]
        return self.means[k] + (chol @ torch.randn(n, 2, 1, generator=generator, dtype=torch.float64))[..., 0]

    def denoiser(self, x: Tensor, sigma: Tensor) -> Tensor:
        """E[x_0 | x_0 + σ ε = x] under the mixture (one σ per call, as samplers call it)."""
        s2 = float(sigma[0]) ** 2
        flat = x.double()
        covs = self.covs + s2 * torch.eye(2, dtype=torch.float64)
        inv = torch.linalg.inv(covs)
        centred = flat[:, None] - self.means[None]  # (B, K, 2)
        maha = torch.einsum("bki,kij,bkj->bk", centred, inv, centred)
        log_r = torch.log(self.weights) - 0.5 * (maha + torch.logdet(covs))
        r = torch.softmax(log_r, dim=1)
        shifted = self.means[None] + torch.einsum("kij,kjl,bkl->bki", self.covs, inv, centred)
        return (r[..., None] * shifted).sum(1).to(x.dtype)


def mmd2(x: Tensor, y: Tensor, bandwidths=(0.1, 0.3, 1.0)) -> float:
    """Unbiased MMD² with a sum of RBF kernels exp(−‖a − b‖² / (2 h²))."""
    def kernel(a, b):
        d2 = torch.cdist(a, b) ** 2
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = len(x), len(y)
    return float((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
                 - 2 * kxy.mean())


def scatter_panels(panels: list[list[Tensor]], path: str, size: int = 200, extent: float = 2.6) -> None:
    """A PNG grid of 2-D scatter plots with PIL: one row per entry of ``panels``, one panel per point set."""
    from PIL import Image, ImageDraw

    rows, cols = len(panels), max(len(row) for row in panels)
    canvas = Image.new("RGB", (cols * size, rows * size), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(panels):
        for c, points in enumerate(row):
            left, top = c * size, r * size
            draw.rectangle([left, top, left + size - 1, top + size - 1], outline=(180, 180, 180))
            for x, y in points.tolist():
                px, py = left + (x / extent + 1) * size / 2, top + (1 - y / extent) * size / 2
                if left <= px < left + size and top <= py < top + size:
                    draw.point((px, py), fill=(20, 60, 160))
    canvas.save(path)


def run(pairs, steps_list, n: int, sampler_name: str, seed: int = 0, plot: str | None = None) -> list[dict]:
    process = DiscreteVP(1000)
    models, rows = {}, []
    for name in sorted({d for pair in pairs for d in pair}):
        train = DATASETS[name](4000, np.random.default_rng([seed, 1, sorted(DATASETS).index(name)]))
        models[name] = GaussianMixtureModel(train, seed=seed)
    panels = []
    for source, target in pairs:
        rng = np.random.default_rng([seed, 2])
        x = torch.from_numpy(DATASETS[source](n, rng))
        fresh = torch.from_numpy(DATASETS[target](n, np.random.default_rng([seed, 3])))
        floor = torch.from_numpy(DATASETS[target](n, np.random.default_rng([seed, 4])))
        for steps in steps_list:
            sampler = {"algorithm": sampler_name, "steps": steps}
            start = time.perf_counter()
            forward = ddib(models[source].denoiser, process, models[target].denoiser, process, x, sampler)
            back = ddib(models[target].denoiser, process, models[source].denoiser, process, forward.images, sampler)
            rows.append({"source": source, "target": target, "sampler": sampler_name, "steps": steps,
                         "nfe": forward.nfe, "cycle_l2": (back.images - x).norm(dim=1).mean().item(),
                         "mmd2_to_target": mmd2(forward.images, fresh), "mmd2_source_to_target": mmd2(x, fresh),
                         "mmd2_floor": mmd2(floor, fresh), "seconds": time.perf_counter() - start})
        panels.append([x, forward.images, back.images, fresh])  # at the largest number of steps
    if plot:
        scatter_panels(panels, plot)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    parser.add_argument("--sampler", default="ddim", choices=["ddim", "euler", "heun"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="PNG: per pair, source | translation | cycle | target sample")
    args = parser.parse_args()
    pairs = [("moons", "checkerboard"), ("checkerboard", "rings"), ("rings", "moons")]
    rows = run(pairs, args.steps, args.n, args.sampler, args.seed, args.plot)
    print("| source → target | sampler | steps | NFE (one way) | cycle L2 | MMD² to target | MMD² untranslated | "
          "MMD² floor | s |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} → {r['target']} | {r['sampler']} | {r['steps']} | {r['nfe']} | {r['cycle_l2']:.4f} | "
              f"{r['mmd2_to_target']:.4f} | {r['mmd2_source_to_target']:.4f} | {r['mmd2_floor']:.4f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
