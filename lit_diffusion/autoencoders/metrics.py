"""Reconstruction metrics of a first stage: PSNR and SSIM (torchmetrics), rFID (reconstructions vs originals with
the project's offline Inception, :mod:`lit_diffusion.metrics`), and codebook usage / perplexity of a VQ model.

Conventions: images in [-1, 1] are mapped to [0, 1] (reconstructions clipped first) and PSNR / SSIM are computed
per image (data range 1; SSIM with torchmetrics' default 11×11 Gaussian window) and averaged, as the LDM model
zoo's "PSNR ± std" is.  rFID is FID between the Inception features of the originals and of their reconstructions,
both as uint8 images (what PNGs would hold).  Perplexity is exp(H(p)) of the code histogram p (Karpathy's
``deep-vector-quantization``, used by taming/LDM's ``measure_perplexity``): it equals n_embed when every code
is used equally often.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from lit_diffusion.autoencoders.networks import encode, decode, kind_of, quantize
from lit_diffusion.images import to_uint8
from lit_diffusion.metrics import build_extractor, feature_metrics


def _unit(images: Tensor) -> Tensor:
    return ((images.float().clamp(-1, 1) + 1) / 2)


def psnr_per_image(originals: Tensor, reconstructions: Tensor) -> Tensor:
    """PSNR (dB) of each image pair, images in [-1, 1]; shape (B,)."""
    return peak_signal_noise_ratio(_unit(reconstructions), _unit(originals), data_range=1.0, reduction="none",
                                   dim=(1, 2, 3))


def ssim_per_image(originals: Tensor, reconstructions: Tensor) -> Tensor:
    """SSIM of each image pair, images in [-1, 1]; shape (B,)."""
    return structural_similarity_index_measure(_unit(reconstructions), _unit(originals), data_range=1.0,
                                               reduction="none")


def code_counts(indices: Tensor, n_embed: int) -> Tensor:
    """Histogram (n_embed,) of code indices."""
    return torch.bincount(indices.flatten().long(), minlength=n_embed)


def codebook_stats(counts_or_indices: Tensor, n_embed: int | None = None) -> dict[str, float]:
    """``codebook_usage`` (fraction of codes used at least once), ``codebook_used`` (their number) and
    ``perplexity`` exp(−Σ p log p) from a code histogram, or from indices with ``n_embed``."""
    counts = counts_or_indices if n_embed is None else code_counts(counts_or_indices, n_embed)
    counts = counts.double()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    used = int((counts > 0).sum())
    return {"codebook_usage": used / counts.numel(), "codebook_used": used, "perplexity": float(entropy.exp())}


@torch.no_grad()
def reconstruction_metrics(autoencoder: nn.Module, batches: Iterable[Tensor], *, sample: bool = False,
                           extractor: str | nn.Module | None = "inception", device: str | torch.device = "cpu",
                           max_images: int | None = None) -> dict:
    """PSNR / SSIM (mean and std), rFID and, for VQ models, codebook usage and perplexity of the
    reconstructions of image batches in [-1, 1] (e.g. ``(b["image"] for b in datamodule.val_dataloader())``).

    ``sample``: reconstruct KL models from a posterior draw instead of its mode.  ``extractor``: a name of
    :data:`lit_diffusion.metrics.EXTRACTORS`, a built extractor, or None to skip rFID.  The autoencoder is used
    as it is (call ``.eval()`` first)."""
    device = torch.device(device)
    autoencoder = autoencoder.to(device)
    kind = kind_of(autoencoder)
    if isinstance(extractor, str):
        extractor = build_extractor(extractor)
    if extractor is not None:
        extractor = extractor.to(device)
    psnr, ssim, real, fake = [], [], [], []
    counts = None
    seen = 0
    for images in batches:
        if max_images is not None:
            images = images[: max_images - seen]
        if len(images) == 0:
            break
        images = images.to(device)
        z = encode(autoencoder, images, sample=sample)
        if kind == "vq":
            _, _, indices = quantize(autoencoder, z)
            n = autoencoder.quantize.n_e
            counts = code_counts(indices, n) if counts is None else counts + code_counts(indices, n)
        rec = decode(autoencoder, z).clamp(-1, 1)
        psnr.append(psnr_per_image(images, rec).cpu())
        ssim.append(ssim_per_image(images, rec).cpu())
        if extractor is not None:
            real.append(extractor(to_uint8(images))[0].float().cpu())
            fake.append(extractor(to_uint8(rec))[0].float().cpu())
        seen += len(images)
        if max_images is not None and seen >= max_images:
            break
    if not psnr:
        raise ValueError("no images to reconstruct")
    psnr_all, ssim_all = torch.cat(psnr).double(), torch.cat(ssim).double()
    finite = psnr_all[torch.isfinite(psnr_all)]  # identical images have infinite PSNR
    out = {"n": seen, "psnr": float(finite.mean()) if len(finite) else math.inf,
           "psnr_std": float(finite.std()) if len(finite) > 1 else 0.0,
           "ssim": float(ssim_all.mean()), "ssim_std": float(ssim_all.std()) if len(ssim_all) > 1 else 0.0}
    if extractor is not None:
        metrics, _ = feature_metrics(["fid"], torch.cat(fake), torch.cat(real), None)
        out["rfid"] = float(metrics["fid"])
        out["extractor"] = getattr(extractor, "name", type(extractor).__name__)
    if counts is not None:
        out |= codebook_stats(counts)
    return out
