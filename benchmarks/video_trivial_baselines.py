"""Trivial baselines for the video metrics of ``evaluate task=video``: the same first n validation videos of a video
checkpoint's data and the same SSIM / PSNR protocol (:func:`lit_diffusion.metrics.video.frame_scores`).

- prediction: the last given frame repeated over the predicted frames;
- interpolation: a linear blend from the last past frame to the first future frame.

A model must beat these to show that it predicts motion:

    python benchmarks/video_trivial_baselines.py CKPT [--n 20] [--past 5] [--future 5] [--out baselines.json]
"""

from __future__ import annotations

import argparse
import json

import torch
from omegaconf import OmegaConf

from lit_diffusion.checkpoint import model_from_checkpoint
from lit_diffusion.datamodules.frame_masks import frame_mask
from lit_diffusion.edit import data_config
from lit_diffusion.metrics.images import dataset_split
from lit_diffusion.metrics.video import frame_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--past", type=int, default=5)
    parser.add_argument("--future", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model = model_from_checkpoint(args.ckpt, "ema", "cpu")
    dataset = dataset_split(data_config(OmegaConf.create({"data": None, "data_root": None}), model, None), "val")
    references = torch.stack([dataset[i]["image"] for i in range(args.n)])  # (N, C, T, H, W)
    frames, past, future = references.shape[2], args.past, args.future
    results = {}
    predicted = frame_mask("prediction", frames, past, future) == 0
    copied = references.clone()
    copied[:, :, past:] = references[:, :, past - 1:past]
    ssim, psnr = frame_scores(copied, references, predicted)
    results["prediction_copy_last_frame"] = {"ssim": ssim.mean().item(), "psnr": psnr.mean().item()}
    between = frame_mask("interpolation", frames, past, future) == 0
    missing = between.nonzero().flatten().tolist()
    start, end = references[:, :, past - 1], references[:, :, frames - future]
    blended = references.clone()
    for j, t in enumerate(missing):
        weight = (j + 1) / (len(missing) + 1)
        blended[:, :, t] = (1 - weight) * start + weight * end
    ssim, psnr = frame_scores(blended, references, between)
    results["interpolation_linear_blend"] = {"ssim": ssim.mean().item(), "psnr": psnr.mean().item()}
    results["protocol"] = {"n": args.n, "split": "val", "past": past, "future": future, "frames": frames}
    print(json.dumps(results, indent=1))
    if args.out:
        with open(args.out, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
