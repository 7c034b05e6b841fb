"""Sampling entry point: ``python -m lit_diffusion.sample ckpt=PATH [n=64] [sampler=ddim] [sampler.steps=N]``.

Loads a checkpoint (EMA weights unless ``weights=raw``), draws ``n`` images with a fixed seed and writes
``grid.png`` plus the individual images (``format=png``) or ``samples.npz`` (``format=npz``).  Guidance:
``class_labels=[0,1,...] guidance_scale=W`` (classifier-free, class-conditional models) or
``class_labels=[...] classifier=CLASSIFIER.ckpt guidance_scale=S`` (classifier guidance).
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import numpy as np
import torch
import torchvision
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.progress import Progress

from lit_diffusion.callbacks.sample_grid import to_grid
from lit_diffusion.checkpoint import model_from_checkpoint
from lit_diffusion.config import to_plain
from lit_diffusion.errors import UserError, exit_on_user_error
from lit_diffusion.sampling import num_sampler_steps


def resolve_sampler(stored: dict, requested: dict) -> dict:
    """The checkpoint's sampler, or the requested one; non-null requested keys override stored ones."""
    if requested.get("algorithm") is None:
        return {**stored, **{k: v for k, v in requested.items() if v is not None and k != "algorithm"}}
    return requested


def write_samples(images: torch.Tensor, out: Path, fmt: str, nrow: int) -> Path:
    """Save a grid and the individual images; returns the grid's path."""
    out.mkdir(parents=True, exist_ok=True)
    grid_path = out / "grid.png"
    torchvision.utils.save_image(to_grid(images, nrow), grid_path)
    uint8 = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    if fmt == "npz":
        np.savez_compressed(out / "samples.npz", images=uint8.permute(0, 2, 3, 1).numpy())
    elif fmt == "png":
        for i, image in enumerate(uint8):
            torchvision.io.write_png(image, str(out / f"{i:06d}.png"))
    else:
        raise UserError(f"format={fmt} is not one of png, npz")
    return grid_path


def sample(cfg: DictConfig) -> dict:
    torch.set_flush_denormal(True)  # subnormal floats slow CPU kernels by 4-10x (benchmarks/)
    model = model_from_checkpoint(cfg.ckpt, cfg.weights, cfg.device)
    sampler = resolve_sampler(model.hparams.sampler, to_plain(cfg.sampler))
    classifier = None if cfg.classifier is None else model_from_checkpoint(cfg.classifier, cfg.weights, cfg.device)
    labels = None
    if cfg.class_labels is not None:
        labels = torch.tensor(list(cfg.class_labels), device=model.device).repeat(math.ceil(cfg.n / len(cfg.class_labels)))
    batches, nfe = [], 0
    steps_per_batch = num_sampler_steps(model.process, sampler)
    num_batches = math.ceil(cfg.n / cfg.batch_size)
    with Progress() as progress:
        task = progress.add_task(f"sampling {cfg.n} images ({sampler['algorithm']})", total=num_batches * steps_per_batch)
        for i in range(num_batches):
            size = min(cfg.batch_size, cfg.n - i * cfg.batch_size)
            batch_labels = None if labels is None else labels[i * cfg.batch_size: i * cfg.batch_size + size]
            result = model.sample(size, sampler, seed=cfg.seed + i, class_labels=batch_labels,
                                  guidance_scale=cfg.guidance_scale, classifier=classifier,
                                  on_call=lambda: progress.advance(task))
            batches.append(result.images)
            nfe = result.nfe
    images = torch.cat(batches)
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir)
    grid = write_samples(images, out, cfg.format, cfg.nrow or math.ceil(math.sqrt(cfg.n)))
    print(f"wrote {cfg.n} samples to {out} (grid: {grid}); sampler {sampler['algorithm']}, NFE per image {nfe}")
    return {"grid": str(grid), "nfe": nfe, "out": str(out)}


@hydra.main(version_base="1.3", config_path="configs", config_name="sample")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    sample(cfg)


if __name__ == "__main__":
    main()
