"""What the network predicts, for a noisy sample x_t = a·x_0 + b·ε.

DDPM predicts the noise ε (Ho et al. 2020, Eq. 11), others the clean image x_0, and progressive
distillation the velocity v = a·ε − b·x_0 (Salimans & Ho 2022, §4).  The conversions below hold for any
a, b (VP has a² + b² = 1; VE has a = 1, b = σ), so every framework shares them.
"""

from __future__ import annotations

from torch import Tensor

from lit_diffusion.errors import UserError

PREDICTIONS = ("eps", "x0", "v")


def check_prediction(kind: str) -> str:
    if kind not in PREDICTIONS:
        raise UserError(f"unknown prediction '{kind}': choose one of {', '.join(PREDICTIONS)}")
    return kind


def training_target(kind: str, x0: Tensor, eps: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """The regression target of L_simple for a network predicting ``kind``."""
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    return a * eps - b * x0


def predict_x0(kind: str, pred: Tensor, xt: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x̂_0 from the network output: (x_t − b ε̂)/a, x̂_0 itself, or (a x_t − b v̂)/(a² + b²)."""
    if kind == "eps":
        return (xt - b * pred) / a
    if kind == "x0":
        return pred
    return (a * xt - b * pred) / (a**2 + b**2)


def predict_eps(kind: str, pred: Tensor, xt: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """ε̂ from the network output: ε̂ itself, (x_t − a x̂_0)/b, or (b x_t + a v̂)/(a² + b²)."""
    if kind == "eps":
        return pred
    if kind == "x0":
        return (xt - a * pred) / b
    return (b * xt + a * pred) / (a**2 + b**2)
