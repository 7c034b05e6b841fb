"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): multistep second-order solver of the
probability-flow ODE in its data-prediction form.

With λ = −log σ (half the log-SNR) and h_i = λ_{i+1} − λ_i, the exact solution of the ODE in scaled
coordinates is x_{σ'} = (σ'/σ) x_σ + σ' ∫ e^{λ} D dλ; DPM-Solver++ integrates D to second order with the
previous step's denoised value:

    D_i' = (1 + 1/(2 r_i)) D_i − (1/(2 r_i)) D_{i−1},   r_i = h_{i−1}/h_i,
    x_{i+1} = (σ_{i+1}/σ_i) x_i + (1 − e^{−h_i}) D_i'      (first order, D_i' = D_i, on the first step),

and the last step to σ = 0 returns the denoised value (first order, as in the paper).  One NFE per step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_diffusion.samplers.callback import StepCallback, after_step


@torch.no_grad()
def sample_dpm_solver(denoiser, x: Tensor, sigmas: Tensor, *, process=None, generator=None,
                      callback: StepCallback | None = None) -> Tensor:
    """DPM-Solver++(2M) over ``sigmas`` (decreasing, ending in 0) from x ~ p_T."""
    levels = sigmas.tolist()
    previous = None  # (D_{i−1}, h_{i−1})
    for i, (sigma, sigma_next) in enumerate(zip(levels[:-1], levels[1:])):
        denoised = denoiser(x, x.new_full((x.shape[0],), sigma))
        if sigma_next == 0:
            return after_step(callback, i, sigma_next, denoised, denoised)
        h = math.log(sigma / sigma_next)
        d = denoised
        if previous is not None:
            r = previous[1] / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous[0]
        x = after_step(callback, i, sigma_next, (sigma_next / sigma) * x + (1 - sigma_next / sigma) * d, denoised)
        previous = (denoised, h)
    return x
