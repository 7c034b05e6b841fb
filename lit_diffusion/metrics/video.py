"""Video metrics: best-of-N SSIM / PSNR of predictions, frame-level FID / KID, Fréchet distance of video features.

- **Best of N** (the SM-MNIST protocol of SVG, Denton & Fergus 2018, and MCVD, Voleti et al. 2022, Table 1): for each
  test video, N predictions are drawn; each is scored by its SSIM and PSNR averaged over the predicted frames (frames
  as uint8 images, data range 1; torchmetrics, SSIM's 11×11 Gaussian window); the best of the N per video is kept
  and the mean over videos reported.
- **Frame FID / KID**: every frame is an image for the project's feature extractors (Inception by default,
  :mod:`lit_diffusion.metrics.scores`).
- **Fréchet distance of video features** (FVD's formula, Unterthiner et al. 2019): on I3D features where a user
  provides them, here on the features of :class:`~lit_diffusion.metrics.video_classifier.VideoClassifier`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from lit_diffusion.images import to_uint8
from lit_diffusion.metrics.features import FeatureExtractor, extract
from lit_diffusion.metrics.scores import fid, feature_metrics
from lit_diffusion.videos import check_videos


def frame_scores(videos: Tensor, references: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
    """Per-video SSIM and PSNR (N,) of ``videos`` against ``references`` (N, C, T, H, W) in [-1, 1], averaged over the
    frames where ``frames`` (T,) is True; both as uint8 images in [0, 1].  Identical frames have PSNR inf."""
    out, ref = (to_uint8(check_videos(v)[:, :, frames]).double().transpose(1, 2).flatten(0, 1) / 255
                for v in (videos, references))
    psnr = peak_signal_noise_ratio(out, ref, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(out, ref, data_range=1.0, reduction="none")
    count = int(frames.sum())
    return ssim.view(-1, count).mean(1), psnr.view(-1, count).mean(1)


def best_of_n(samples: Tensor, references: Tensor, frames: Tensor) -> dict[str, float]:
    """``samples`` (N, K, C, T, H, W): K predictions of each of the N ``references``; the mean over videos of the best
    SSIM and of the best PSNR among the K (each chosen on its own), over the ``frames`` (T,) predicted."""
    n, k = samples.shape[:2]
    ssim, psnr = frame_scores(samples.flatten(0, 1), references.repeat_interleave(k, 0), frames)
    return {"ssim_best": ssim.view(n, k).amax(1).mean().item(), "psnr_best": psnr.view(n, k).amax(1).mean().item(),
            "ssim_mean": ssim.mean().item(), "psnr_mean": psnr.mean().item(), "samples_per_video": k}


def frame_features(extractor: FeatureExtractor, videos: Tensor, device: torch.device | str = "cpu",
                   batch_size: int = 250) -> Tensor:
    """The extractor's features of every frame of ``videos`` (N, C, T, H, W) in [-1, 1], as uint8 images."""
    frames = to_uint8(check_videos(videos)).transpose(1, 2).flatten(0, 1)
    return extract(extractor, frames.split(batch_size), device)[0]


def frame_fid_kid(features: Tensor, reference_features: Tensor, kid_subsets: int = 100,
                  kid_subset_size: int = 1000) -> dict[str, float]:
    """FID and KID between two sets of :func:`frame_features`, keys prefixed ``frame_``."""
    values, _ = feature_metrics(["fid", "kid"], features, reference_features, None, kid_subsets=kid_subsets,
                                kid_subset_size=kid_subset_size)
    return {f"frame_{key}": value for key, value in values.items()}


def frechet_distance(features: Tensor, reference_features: Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (FID's and FVD's formula)."""
    return fid(features, reference_features)
