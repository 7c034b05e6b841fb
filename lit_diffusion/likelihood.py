"""Exact likelihood through the probability-flow ODE (Song et al. 2021, §4.3 and App. D.2).

For the ODE dx/dt = f̃(x, t) of :mod:`lit_diffusion.samplers.ode`, the instantaneous change of variables
(Chen et al. 2018) gives

    log p_0(x(0)) = log p_1(x(1)) + ∫_0^1 ∇·f̃(x(t), t) dt,

integrated with an adaptive solver, the divergence estimated with Hutchinson's trace estimator
E_v[vᵀ ∂f̃/∂x v] (Rademacher or Gaussian v; ``exact`` sums the Jacobian diagonal, for small data).
Bits per dimension of 8-bit images use uniform dequantisation: x = 2(k + u)/256 − 1, u ~ U[0, 1)^D, so
bpd = −log p(x)/(D ln 2) + 7 (the 7 = log2 128 is the Jacobian of [0, 256) → [−1, 1)).

Command line: ``python -m lit_diffusion.likelihood ckpt=PATH [n=1000] [batch_size=100] [seed=0]``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from lit_diffusion.checkpoint import model_from_checkpoint
from lit_diffusion.cli import entry_point
from lit_diffusion.config import check_ranges, positive, positive_int, safe_instantiate
from lit_diffusion.errors import UserError
from lit_diffusion.files import atomic_write_text
from lit_diffusion.samplers.ode import ode_drift, solve_ode
from lit_diffusion.samplers.score import as_sde
from lit_diffusion.sampling import CountingDenoiser

TRACE_ESTIMATORS = ("rademacher", "gaussian", "exact")


def check_trace(trace: str) -> None:
    if trace not in TRACE_ESTIMATORS:
        raise UserError(f"unknown trace estimator '{trace}': choose one of {', '.join(TRACE_ESTIMATORS)}")


def _divergence(drift: Tensor, x: Tensor, trace: str, probe: Tensor | None) -> Tensor:
    if trace == "exact":
        flat = drift.flatten(1)
        rows = [torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)[0].flatten(1)[:, i]
                for i in range(flat.shape[1])]
        return torch.stack(rows, 1).sum(1)
    (grad,) = torch.autograd.grad((drift * probe).sum(), x)
    return (grad * probe).flatten(1).sum(1)


def ode_log_likelihood(denoiser, process, x: Tensor, *, trace: str = "rademacher", rtol: float = 1e-5,
                       atol: float = 1e-5, generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    """log p_0(x) in nats per sample (x in data coordinates) and the number of network evaluations."""
    check_trace(trace)
    sde = as_sde(process, "likelihood")
    counted = CountingDenoiser(denoiser, keep_variance=False)
    probe = None
    if trace != "exact":  # one probe vector per sample, fixed along the trajectory
        probe = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if trace == "rademacher":
            probe = probe.sign()
    batch = x.shape[0]

    def augmented(t: float, state: Tensor) -> Tensor:
        y = state[:, :-1].reshape(x.shape)
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            drift = ode_drift(counted, sde, y, t)
            div = _divergence(drift, y, trace, probe)
        return torch.cat([drift.detach().flatten(1), div.detach()[:, None]], 1)

    start = torch.cat([x.flatten(1), x.new_zeros(batch, 1)], 1)
    end = solve_ode(augmented, start, sde.t_min, 1.0, rtol, atol, "RK45")
    z, delta = end[:, :-1].reshape(x.shape), end[:, -1]
    return sde.prior_logp(z) + delta, counted.nfe


def bits_per_dim(denoiser, process, images: Tensor, *, dequantize: bool = True,
                 generator: torch.Generator | None = None, **options) -> tuple[Tensor, int]:
    """Bits/dim of 8-bit images given in [−1, 1] (k/127.5 − 1), with uniform dequantisation."""
    x = images
    if dequantize:
        k = torch.round((images + 1) * 127.5)
        u = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        x = 2 * (k + u) / 256 - 1
    logp, nfe = ode_log_likelihood(denoiser, process, x, generator=generator, **options)
    dims = images[0].numel()
    return -logp / (dims * math.log(2)) + 7.0, nfe


LATENT_SPACE = ("latent bits/dim: the PF-ODE likelihood of the scaled first-stage latents (KL: posterior mode; "
                "VQ: before quantization), continuous, without dequantisation; it leaves out the decoder, so it is "
                "not comparable with pixel-space bits/dim")


def model_bits_per_dim(model, images: Tensor, generator: torch.Generator | None = None, **options) -> tuple[Tensor, int]:
    """Bits/dim of images in [−1, 1] under a model: a pixel model's as :func:`bits_per_dim`; a latent model's of
    its latents (:data:`LATENT_SPACE`)."""
    if model.first_stage is None:
        return bits_per_dim(model.denoise, model.process, images, generator=generator, **options)
    latents = model.first_stage.module.encode(images, sample=False)
    logp, nfe = ode_log_likelihood(model.denoise, model.process, latents, generator=generator, **options)
    return -logp / (latents[0].numel() * math.log(2)), nfe


def space_of(model) -> dict:
    """What a bits/dim number of ``model`` measures, for result files."""
    if model.first_stage is None:
        return {"space": "pixel", "dequantization": "uniform"}
    return {"space": "latent", "latent_shape": list(model.sample_shape), "note": LATENT_SPACE}


def likelihood(cfg: DictConfig) -> dict:
    """Bits/dim of the first ``n`` validation images of the checkpoint's dataset."""
    check_ranges(cfg, [positive_int("n"), positive_int("batch_size"), positive("rtol"), positive("atol")])
    check_trace(cfg.trace)
    model = model_from_checkpoint(cfg.ckpt, cfg.weights, cfg.device)
    data_cfg = (model.run_config or {}).get("data")
    if data_cfg is None:
        raise UserError(f"'{cfg.ckpt}' stores no data config; cannot tell which test images to score")
    datamodule = safe_instantiate({**data_cfg, **({"root": cfg.data_root} if cfg.data_root else {}),
                                          "batch_size": cfg.batch_size})
    datamodule.setup("validate")
    generator = torch.Generator(model.device).manual_seed(cfg.seed)
    values, nfes = [], []
    for batch in datamodule.val_dataloader():
        bpd, nfe = model_bits_per_dim(model, batch["image"].to(model.device), generator=generator, trace=cfg.trace,
                                      rtol=cfg.rtol, atol=cfg.atol)
        values.append(bpd)
        nfes.append(nfe)
        if sum(len(v) for v in values) >= cfg.n:
            break
    bpd = torch.cat(values)[: cfg.n]
    result = {"ckpt": str(cfg.ckpt), "weights": cfg.weights, "n": len(bpd), "bpd_mean": bpd.mean().item(),
              "bpd_sem": (bpd.std() / math.sqrt(len(bpd))).item() if len(bpd) > 1 else float("nan"),
              "nfe_mean": sum(nfes) / len(nfes), "trace": cfg.trace, "rtol": cfg.rtol, "atol": cfg.atol,
              "seed": cfg.seed, **space_of(model)}
    print(json.dumps(result, indent=2))
    if cfg.out:
        atomic_write_text(Path(cfg.out), json.dumps(result, indent=2))
    return result


main = entry_point("likelihood")(likelihood)

if __name__ == "__main__":
    main()
