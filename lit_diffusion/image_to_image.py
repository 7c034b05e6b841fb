"""Evaluating an image-conditioned model (SR3, Palette) on a split of its data: ``evaluate task=sr``.

    python -m lit_diffusion.evaluate task=sr ckpt=PATH [n=1000] [sampler.steps=100] [out=DIR]
    python -m lit_diffusion.evaluate task=sr ckpt=PATH task.output=bicubic      # the bicubic baseline
    python -m lit_diffusion.evaluate task=sr ckpt=PATH data=celebahq data.root=DIR data.image_size=128  # other images

Items ``first … first + n − 1`` of the split (of the checkpoint's dataset, or ``data=NAME``) are degraded by
the checkpoint's own pair transforms (the ``data.pairs`` it was trained with, e.g. ``LowResolution`` ×4), the
model is given their conditions and draws one output per item (EMA weights unless ``weights=raw``; image i from
the noise stream (seed, first + i)), or, with ``task.output=bicubic``, the bicubic-upsampled input itself is the
output.  Metrics against the
references (the clean items):

- ``psnr``, ``ssim``: mean over images, both as uint8 PNGs (data range 1; torchmetrics, SSIM's 11×11 Gaussian
  window);
- ``consistency``: SR3's consistency (Saharia et al. 2021, Table 2), the MSE between the output downsampled by
  the data's own operator and the low-resolution input (= the reference downsampled by it), pixels in [0, 1];
  the paper prints it in units of 10⁻⁵;
- ``fid``, ``kid``: Inception features of the outputs against those of the same items' references (the first
  ``first + n`` images of the split, cached as every dataset reference).

Written to ``out`` (default: the Hydra run folder): ``grid.png`` (rows of inputs, outputs and references of the
first ``task.grid`` items) and ``metrics.json`` with the protocol (data and pairs, sampler and NFE, seeds,
checkpoint SHA-256, extractor, library versions, wall time).
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch import Tensor

from lit_diffusion.checkpoint import model_from_checkpoint, resolve_device
from lit_diffusion.config import to_plain
from lit_diffusion.datamodules.pairs import LowResolution, one_of
from lit_diffusion.edit import data_config, psnr_ssim, run_batches
from lit_diffusion.errors import UserError
from lit_diffusion.images import interleave_rows, save_grid, to_uint8
from lit_diffusion.metrics import build_extractor, dataset_reference, extract, feature_metrics
from lit_diffusion.metrics.features import file_sha256
from lit_diffusion.metrics.images import dataset_split
from lit_diffusion.provenance import versions
from lit_diffusion.sampling import resolve_sampler

OUTPUTS = ("model", "bicubic")
METRICS = ("psnr", "ssim", "consistency", "fid", "kid")
SEED_DERIVATION = "image i: numpy SeedSequence([seed, first + i]) (batch-size independent)"


def consistency(outputs: Tensor, references: Tensor, degradation: LowResolution) -> float:
    """SR3's consistency: mean squared difference, in [0, 1] pixel units, between the outputs and the references
    both downsampled by ``degradation`` (the references' downsampled copies are the low-resolution inputs)."""
    size = (outputs.shape[-2] // degradation.factor, outputs.shape[-1] // degradation.factor)
    down_out, down_ref = (degradation.resize(images.float(), size) for images in (outputs, references))
    return (((down_out - down_ref) / 2) ** 2).mean().item()


def low_resolution_pair(dataset, key: str) -> LowResolution:
    """The data's :class:`LowResolution` transform that writes the batch key ``key``."""
    for pair in getattr(dataset, "pairs", ()):
        if isinstance(pair, LowResolution) and pair.keys[0] == key:
            return pair
    raise UserError(f"the data has no LowResolution pair writing '{key}': train the model with one (e.g. "
                    f"experiment=sr3_fashion_mnist) or set task.key to the key it writes")


def super_resolution(cfg: DictConfig) -> dict:
    """``evaluate task=sr``: the outputs of a super-resolution checkpoint (or of bicubic upsampling) on a split."""
    start = time.perf_counter()
    options = to_plain(cfg.task)
    output = one_of("task.output", options.get("output"), OUTPUTS)
    metrics = list(cfg.metrics)
    if unknown := sorted(set(metrics) - set(METRICS)):
        raise UserError(f"task=sr has no metrics {unknown}: choose from {', '.join(METRICS)}")
    if not cfg.ckpt:
        raise UserError("task=sr evaluates a checkpoint trained with a low-resolution pair (its data and pairs are "
                        "read from it; task.output=bicubic scores the bicubic baseline on them): pass ckpt=PATH")
    if cfg.batch_size < 1 or (cfg.n is not None and cfg.n < 1):
        raise UserError(f"n={cfg.n} and batch_size={cfg.batch_size} must be positive")
    key = options["key"]
    device = resolve_device(cfg.device)
    model = model_from_checkpoint(cfg.ckpt, cfg.weights, cfg.device)
    if key not in model.conditioner.input_keys:
        raise UserError(f"task.key={key}, but the checkpoint is conditioned on {model.conditioner.input_keys or 'nothing'}: "
                        "pass a super-resolution checkpoint (e.g. of experiment=sr3_fashion_mnist)")
    given, stored = to_plain(cfg.get("data")) or {}, (model.run_config or {}).get("data") or {}
    data_cfg = data_config(cfg, model, given.get("pairs") or stored.get("pairs"))  # data=NAME keeps the model's pairs
    dataset = dataset_split(data_cfg, cfg.split)
    degradation = low_resolution_pair(dataset, key)
    sampler = resolve_sampler(model.hparams.sampler, to_plain(cfg.sampler)) if output == "model" else None

    def run(batch, generator, first):
        if output == "bicubic":
            return {"input": batch[key], "output": batch[key], "reference": batch["image"], "nfe": 0}
        conditions = {k: batch[k] for k in model.conditioner.input_keys}
        result = model.sample(len(batch["image"]), sampler, cfg.seed, conditions, first_index=first)
        return {"input": batch[key], "output": result.images, "reference": batch["image"], "nfe": result.nfe}

    with torch.no_grad():
        parts = run_batches(cfg, model, dataset, run)
    outputs, references = parts["output"].clamp(-1, 1), parts["reference"]
    values = psnr_ssim(outputs, references) if {"psnr", "ssim"} & set(metrics) else {}
    values = {k: v for k, v in values.items() if k in metrics}
    if "consistency" in metrics:
        values["consistency"] = consistency(outputs, references, degradation)
    reference = None
    if {"fid", "kid"} & set(metrics):
        extractor = build_extractor(cfg.extractor)
        reference = dataset_reference(extractor, {**data_cfg, "pairs": None}, cfg.split, cfg.first + len(outputs),
                                      device, cfg.batch_size)
        fake = extract(extractor, (to_uint8(b) for b in outputs.split(cfg.batch_size)), device)[0]
        scores, _ = feature_metrics([m for m in metrics if m in ("fid", "kid")], fake, reference.features[cfg.first:],
                                    None, kid_subsets=cfg.kid_subsets, kid_subset_size=cfg.kid_subset_size)
        values |= scores | {"extractor": extractor.name, "extractor_weights": extractor.weights_id}
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir)
    shown = min(options.get("grid", 24), len(outputs))
    nrow = min(8, shown)
    grid = save_grid(interleave_rows([parts[k][:shown] for k in ("input", "output", "reference")], nrow),
                     out / "grid.png", nrow)
    result = {
        "task": "sr", "output": output, "metrics": values, "n": len(outputs), "first": cfg.first, "split": cfg.split,
        "seed": cfg.seed, "seed_derivation": SEED_DERIVATION if output == "model" else None,
        "name": cfg.name or (model.run_config or {}).get("name"),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "degradation": {"key": key, "factor": degradation.factor, "mode": degradation.mode,
                        "upsample": degradation.upsample, "antialias": degradation.mode != "area"},
        "data": {k: v for k, v in data_cfg.items() if k != "pairs"}, "pairs": data_cfg.get("pairs"),
        "checkpoint": str(Path(cfg.ckpt).absolute()), "checkpoint_sha256": file_sha256(Path(cfg.ckpt)),
        "weights": cfg.weights, "sampler": sampler, "nfe": parts["nfe"],
        "protocol": {
            "psnr_ssim": "images quantised to uint8 (as PNGs), data range 1, mean over images; SSIM: torchmetrics "
                         "11x11 Gaussian window",
            "consistency": "MSE between output and reference after the data's own downsampling, pixels in [0, 1] "
                           "(SR3 Table 2 prints it x 1e5)",
            "fid_kid": None if reference is None else {"reference": f"the same {len(outputs)} items' clean images "
                                                       f"({cfg.split} split, items {cfg.first}…)",
                                                       "reference_id": reference.id},
        },
        "grid": str(grid), "versions": versions(), "device": str(device),
        "wall_seconds": time.perf_counter() - start,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    summary = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if isinstance(v, float))
    print(f"sr ({output}): {summary}; NFE per image {parts['nfe']} [{result['wall_seconds']:.1f} s]\nwrote {out}")
    return result
