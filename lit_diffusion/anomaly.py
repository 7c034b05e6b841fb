"""Anomaly detection entry point: AnoDDPM on any unconditional checkpoint (:mod:`lit_diffusion.tasks.anomaly`).

    python -m lit_diffusion.anomaly ckpt=PATH [data=mnist] lambda=0.25 noise=simplex out=DIR
    python -m lit_diffusion.anomaly ckpt=PATH normal_classes=[3]     # one class (digit 3) against the rest
    python -m lit_diffusion.anomaly ckpt=PATH synthetic=mixed        # synthetic anomalies with exact masks
    python -m lit_diffusion.evaluate task=anomaly ckpt=PATH ...      # the same from the evaluation entry point

Each image of a split of the checkpoint's dataset (or ``data=NAME``) is diffused to ``lambda`` (a fraction of
the diffusion time; AnoDDPM's λ = 250 of T = 1000 is 0.25) with the checkpoint's noise or ``noise=gaussian |
simplex`` and reconstructed by the sampler (EMA weights unless ``weights=raw``).  The ground truth comes from
one protocol:

- ``normal_classes=[…]``: labels in the list are normal, the others anomalous (MNIST one-class-vs-rest; ELPV:
  ``normal_classes=[0] ignore_classes=[1]``, defect probability 0 normal, > 0.5 anomalous, 1/3 left out);
- ``synthetic=patch | stroke | intensity | mixed``: every image is scored as it is (normal) and with a
  synthetic anomaly whose mask is exact (:mod:`lit_diffusion.datamodules.anomalies`), both from the same noise;
- datasets whose samples carry an ``anomaly_mask`` (MVTec AD) give pixel ground truth by themselves.

Written to ``out``: ``input.png | reconstruction.png | map.png`` (and ``mask.png``) grids of the first images,
``maps.npz`` (every anomaly map, float16, with the masks), ``scores.csv`` (item, label, target, score) and
``metrics.json``: image AUROC/AUPRC, pixel AUROC/AUPRC, Dice and IoU (:mod:`lit_diffusion.metrics.anomaly`),
NFE and the protocol (λ and the σ it starts from, noise, sampler, error, aggregate, seeds, checkpoint SHA-256,
library versions, wall time).  Image i of the scored list draws its noise from (seed, first + i) only.
"""

from __future__ import annotations

import csv
import datetime
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch.utils.data import Dataset

from lit_diffusion.checkpoint import model_from_checkpoint, resolve_device
from lit_diffusion.cli import entry_point
from lit_diffusion.config import check_ranges, positive_int, to_plain
from lit_diffusion.datamodules.anomalies import SyntheticAnomaly
from lit_diffusion.datamodules.base import item_labels
from lit_diffusion.datamodules.pairs import one_of
from lit_diffusion.edit import data_config, first_items, run_batches, unconditional
from lit_diffusion.errors import UserError
from lit_diffusion.images import save_grid
from lit_diffusion.metrics.anomaly import image_metrics, pixel_metrics
from lit_diffusion.metrics.features import file_sha256
from lit_diffusion.metrics.images import dataset_split
from lit_diffusion.noise import SimplexNoise, build_noise
from lit_diffusion.provenance import versions
from lit_diffusion.randomness import PerImageGenerator
from lit_diffusion.sampling import resolve_sampler
from lit_diffusion.tasks.anomaly import AGGREGATES, ERRORS, anomaly_map, image_scores, reconstruct
from lit_diffusion.tasks.sdedit import start_level

ANOMALOUS_KEY, MASK_KEY = "anomalous", "anomaly_mask"
"""Batch keys of an image with an anomaly and of its (1, H, W) mask, 1 on anomalous pixels."""
SEED_DERIVATION = ("image i of the scored list: numpy SeedSequence([seed, first + i]); with synthetic anomalies "
                   "an image and its anomalous copy share that stream")
GRID = 64
"""Images shown in the PNG grids."""


def detection_noise(cfg: DictConfig, model):
    """The noise of ``noise=`` (null: the checkpoint's training noise); ``noise=simplex`` takes the checkpoint's
    simplex options when it was trained with simplex noise, else AnoDDPM's, updated by ``simplex.*``."""
    if cfg.noise is None:
        return model.noise
    base = model.noise.spec() if isinstance(model.noise, SimplexNoise) else SimplexNoise().spec()
    options = {**base, **(to_plain(cfg.simplex) or {})} if cfg.noise == "simplex" else {}
    return build_noise({**options, "name": cfg.noise})


def scored_items(cfg: DictConfig, dataset: Dataset) -> tuple[list[int], np.ndarray | None]:
    """Items first … first + n − 1 without those of ``ignore_classes``, and their labels (None if unlabelled)."""
    items = np.asarray(first_items(cfg, dataset))
    labels = item_labels(dataset)
    if labels is None:
        if cfg.normal_classes is not None or cfg.ignore_classes:
            raise UserError("normal_classes and ignore_classes need a labelled dataset; this split has no labels")
        return items.tolist(), None
    labels = labels[items]
    keep = ~np.isin(labels, list(cfg.ignore_classes or []))
    if not keep.any():
        raise UserError(f"ignore_classes={list(cfg.ignore_classes)} leaves no image of the {len(items)} selected")
    return items[keep].tolist(), labels[keep]


def anomaly_detection(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    if not cfg.ckpt:
        raise UserError("anomaly detection needs the model of normal images: pass ckpt=PATH")
    if cfg.synthetic is not None and cfg.normal_classes is not None:
        raise UserError("choose one ground truth: synthetic=KIND (every image clean and with an anomaly) or "
                        "normal_classes=[...] (labels); not both")
    check_ranges(cfg, [positive_int("n"), positive_int("batch_size")])
    one_of("error", cfg.error, ERRORS)
    one_of("aggregate", cfg.aggregate, AGGREGATES)
    if (cfg["lambda"] is None) == (cfg.sigma_start is None):
        raise UserError("give exactly one of lambda (a fraction of the diffusion time, AnoDDPM's λ/T) and "
                        "sigma_start (a noise level); set the other to null")
    device = resolve_device(cfg.device)
    model = model_from_checkpoint(cfg.ckpt, cfg.weights, cfg.device)
    denoiser, process = unconditional(model), model.process
    sampler = resolve_sampler(model.hparams.sampler, to_plain(cfg.sampler))
    noise = detection_noise(cfg, model)
    pairs = None
    if cfg.synthetic is not None:
        pairs = {"anomaly": {"_target_": f"{SyntheticAnomaly.__module__}.SyntheticAnomaly", "kind": cfg.synthetic,
                             "key": ANOMALOUS_KEY, "mask_key": MASK_KEY}}
    data_cfg = data_config(cfg, model, pairs)
    dataset = dataset_split(data_cfg, cfg.split)
    items, labels = scored_items(cfg, dataset)
    level = {"t0": cfg["lambda"], "sigma_start": cfg.sigma_start}
    sigma_used, steps = start_level(process, sampler, **level)

    def run(batch, generator, first):
        images = batch["image"]
        result = reconstruct(denoiser, process, images, sampler, generator, noise=noise, **level)
        positions = torch.arange(first - cfg.first, first - cfg.first + len(images))
        out = {"input": images, "reconstruction": result.images.clamp(-1, 1), "position": positions,
               "nfe": result.nfe}
        if MASK_KEY in batch:
            out["mask"] = batch[MASK_KEY].float()
        if ANOMALOUS_KEY in batch:  # the same images with an anomaly, reconstructed from the same noise
            again = PerImageGenerator(cfg.seed, first, len(images), model.device)
            changed = reconstruct(denoiser, process, batch[ANOMALOUS_KEY], sampler, again, noise=noise, **level)
            out |= {"input": torch.cat([images, batch[ANOMALOUS_KEY]]), "position": positions.repeat(2),
                    "reconstruction": torch.cat([out["reconstruction"], changed.images.clamp(-1, 1)]),
                    "mask": torch.cat([torch.zeros_like(out["mask"]), out["mask"]]),
                    "anomalous": torch.arange(2 * len(images)) >= len(images)}
        return out

    with torch.no_grad():
        parts = run_batches(cfg, model, dataset, run, items)
    sampling_seconds = time.perf_counter() - start
    maps = anomaly_map(parts["input"], parts["reconstruction"], cfg.error)
    scores = image_scores(maps, cfg.aggregate, cfg.top_fraction)
    rows = score_rows(cfg, parts, items, labels)
    targets = [row["target"] for row in rows]
    metrics: dict[str, Any] = {}
    if None not in targets:
        metrics |= image_metrics(scores, torch.tensor(targets))
    if "mask" in parts:
        metrics |= pixel_metrics(maps, parts["mask"])
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir)
    files = write_outputs(out, parts, maps, scores, rows)
    result = {
        "task": "anomaly", "method": "AnoDDPM partial diffusion (Wyatt et al. 2022)",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "lambda": cfg["lambda"], "sigma_start": cfg.sigma_start, "sigma_start_used": sigma_used,
        "steps_taken": steps, "nfe": parts["nfe"], "noise": noise.spec(), "training_noise": model.noise.spec(),
        "sampler": sampler, "error": cfg.error, "aggregate": cfg.aggregate,
        "top_fraction": cfg.top_fraction if cfg.aggregate == "top" else None,
        "protocol": protocol(cfg, parts), "metrics": metrics,
        "n_images": len(rows), "first": cfg.first, "split": cfg.split, "seed": cfg.seed,
        "seed_derivation": SEED_DERIVATION, "data": {k: v for k, v in data_cfg.items() if k != "pairs"},
        "pairs": pairs, "checkpoint": str(Path(cfg.ckpt).absolute()), "checkpoint_sha256": file_sha256(Path(cfg.ckpt)),
        "weights": cfg.weights, "files": files, "versions": versions(), "device": str(device),
        "sampling_seconds": sampling_seconds, "wall_seconds": time.perf_counter() - start,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and k != "threshold")
    print(f"anomaly: {shown or 'no ground truth (scores only)'}; NFE per image {parts['nfe']} "
          f"[{result['wall_seconds']:.1f} s]\nwrote {out}")
    return result


def protocol(cfg: DictConfig, parts: dict) -> dict:
    """The ground truth used, in words and settings."""
    if cfg.synthetic is not None:
        kind = f"synthetic anomalies ({cfg.synthetic}): each image clean (normal) and with an anomaly (exact mask)"
    elif cfg.normal_classes is not None:
        kind = f"labels {list(cfg.normal_classes)} normal, the others anomalous"
    else:
        kind = "dataset anomaly masks" if "mask" in parts else "none (scores only)"
    return {"ground_truth": kind, "normal_classes": to_plain(cfg.normal_classes),
            "ignore_classes": to_plain(cfg.ignore_classes), "synthetic": cfg.synthetic,
            "pixel_metrics": "all pixels pooled; Dice/IoU at the Dice-maximising threshold" if "mask" in parts else None}


def score_rows(cfg: DictConfig, parts: dict, items: list[int], labels: np.ndarray | None) -> list[dict]:
    """One row per scored image: dataset item, label, version (as is, or clean / anomalous copy) and target
    (1 anomalous, 0 normal, None without ground truth)."""
    rows = []
    for index, position in enumerate(parts["position"].tolist()):
        label = None if labels is None else int(labels[position])
        version = "as is"
        if "anomalous" in parts:
            version = "anomalous" if parts["anomalous"][index] else "clean"
            target = int(version == "anomalous")
        elif cfg.normal_classes is not None:
            target = int(label not in list(cfg.normal_classes))
        elif "mask" in parts:
            target = int(parts["mask"][index].any())
        else:
            target = None
        rows.append({"index": index, "item": items[position], "label": label, "version": version, "target": target})
    return rows


def write_outputs(out: Path, parts: dict, maps: torch.Tensor, scores: torch.Tensor, rows: list[dict]) -> dict:
    """Grids of the first images, every map in ``maps.npz`` and the per-image scores in ``scores.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    shown = {"input": parts["input"], "reconstruction": parts["reconstruction"],
             "map": maps / maps.amax().clamp(min=1e-12) * 2 - 1}  # maps scaled to their maximum for display
    if "mask" in parts:
        shown["mask"] = parts["mask"] * 2 - 1
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["item"], rows[i]["version"]))[:GRID]
    files = {key: str(save_grid(images[order], out / f"{key}.png")) for key, images in shown.items()}
    arrays = {"maps": maps.half().numpy(), "scores": scores.numpy()}
    if "mask" in parts:
        arrays["masks"] = parts["mask"].bool().numpy()
    np.savez_compressed(out / "maps.npz", **arrays)
    with (out / "scores.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, [*rows[0], "score"])
        writer.writeheader()
        writer.writerows({**row, "score": float(score)} for row, score in zip(rows, scores))
    return {**files, "maps": str(out / "maps.npz"), "scores": str(out / "scores.csv")}


main = entry_point("anomaly")(anomaly_detection)

if __name__ == "__main__":
    main()
