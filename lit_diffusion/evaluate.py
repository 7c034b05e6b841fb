"""Evaluation entry point: checkpoint (or image folder) → FID / KID / IS / precision-recall / bits-per-dim,
with the protocol written next to every number.

    python -m lit_diffusion.evaluate ckpt=PATH metrics=[fid,kid,is,pr,bpd] n=50000 sampler=ddim sampler.steps=50 seed=0
    python -m lit_diffusion.evaluate ckpt=PATH seeds=[0,1,2]          # mean ± std and min over seeds (as EDM)
    python -m lit_diffusion.evaluate fake=DIR real=DIR                # two folders (e.g. another framework's samples)
    python -m lit_diffusion.evaluate ckpt=PATH metrics=[fid,kid,caption_accuracy] prompts=FILE -m guidance_scale=0,1,2,4,8
    python -m lit_diffusion.evaluate task=anomaly ckpt=PATH normal_classes=[3] out=DIR   # AnoDDPM (lit_diffusion.anomaly)
    python -m lit_diffusion.evaluate task=sr ckpt=PATH n=1000 out=DIR    # PSNR/SSIM/consistency/FID (lit_diffusion.image_to_image)
    python -m lit_diffusion.evaluate task=palette ckpt=PATH task.degradation=inpaint out=DIR   # Palette, one task
    python -m lit_diffusion.evaluate task=video ckpt=PATH n=100 out=DIR    # SSIM/PSNR best of N, frame FID/KID, FD (lit_diffusion.video_evaluation)

Generated images are quantised to uint8 like saved PNGs; reference features of a dataset split are cached
(:mod:`lit_diffusion.metrics.reference`).  The result JSON records n, the reference id and source, sampler,
steps and NFE, EMA or raw weights, seeds, the checkpoint's SHA-256, the extractor and its weights' hash,
library versions and wall time; a CSV row with the same fields is appended to ``csv``.  Text-to-image checkpoints
sample from ``prompt``/``prompts`` (cycled over the images) and record the prompts and the text encoder; their
``caption_accuracy`` and ``clip_score`` come from :mod:`lit_diffusion.metrics.text_alignment`.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lit_diffusion.anomaly import anomaly_detection
from lit_diffusion.autoencoders import reconstruction_metrics
from lit_diffusion.checkpoint import model_from_checkpoint, resolve_device
from lit_diffusion.cli import entry_point
from lit_diffusion.config import Range, check_ranges, positive_int, to_plain
from lit_diffusion.errors import UserError
from lit_diffusion.files import atomic_write_text, locked
from lit_diffusion.generation import build_guider, cycled_prompts, draw, guider_spec, model_classes, read_prompts
from lit_diffusion.image_to_image import image_to_image
from lit_diffusion.images import to_uint8
from lit_diffusion.likelihood import model_bits_per_dim, space_of
from lit_diffusion.metrics import FEATURE_METRICS, build_extractor, dataset_reference, extract, feature_metrics
from lit_diffusion.metrics.features import file_sha256
from lit_diffusion.metrics.images import dataset_split, folder_images
from lit_diffusion.metrics.text_alignment import TEXT_METRICS, build_text_metrics
from lit_diffusion.models import Autoencoder
from lit_diffusion.provenance import versions
from lit_diffusion.sampling import resolve_sampler
from lit_diffusion.text import describe_text_encoders
from lit_diffusion.video_evaluation import video_evaluation

SUMMARY_KEYS = ("fid", "kid_mean", "is_mean", "precision", "recall", "caption_accuracy", "clip_score")


def sampled_uint8(results, nfe: list, text_metrics=(), prompts=None):
    """uint8 images of sampled batches, noting the NFE per image and feeding the text metrics each image's prompt."""
    first = 0
    for result in results:
        nfe[:] = [result.nfe]
        images = to_uint8(result.images)
        for metric in text_metrics:
            metric.update(images, cycled_prompts(prompts, first, len(images)))
        first += len(images)
        yield images


def data_config(cfg: DictConfig, model) -> dict | None:
    data = to_plain(cfg.get("data")) or ((model.run_config or {}).get("data") if model is not None else None)
    if data is not None and cfg.data_root:
        data = {**data, "root": cfg.data_root}
    return data


def bits_per_dim_of(model, data_cfg: dict, count: int, seed: int) -> dict:
    dataset = dataset_split(data_cfg, "val")
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(min(count, len(dataset)))), batch_size=100)
    generator = torch.Generator(model.device).manual_seed(seed)
    values = torch.cat([model_bits_per_dim(model, b["image"].to(model.device), generator=generator)[0] for b in loader])
    return {"bpd": values.mean().item(), "bpd_sem": (values.std() / math.sqrt(len(values))).item(), "bpd_n": len(values),
            "bpd_protocol": "PF-ODE likelihood, RK45 rtol=atol=1e-5, Rademacher trace, val split",
            **{f"bpd_{k}": v for k, v in space_of(model).items()}}


TASKS = {"anomaly": anomaly_detection, "sr": image_to_image, "palette": image_to_image, "video": video_evaluation}
"""Task evaluations with their own metrics and protocol (``task=NAME``), instead of sample quality."""


def evaluate(cfg: DictConfig) -> dict:
    task = (cfg.get("task") or {}).get("name")
    if task is not None:
        if task not in TASKS:
            raise UserError(f"evaluate has no task '{task}': choose task={' | '.join(TASKS)} (or none: sample quality)")
        return TASKS[task](cfg)
    start = time.perf_counter()
    metrics = list(cfg.metrics)
    if (cfg.ckpt is None) == (cfg.fake is None):
        raise UserError("give exactly one source of generated images: ckpt=PATH (sample from a checkpoint) or fake=DIR")
    check_ranges(cfg, [positive_int("n"), positive_int("batch_size")])
    known = (*FEATURE_METRICS, "bpd", *TEXT_METRICS)
    if unknown := sorted(set(metrics) - set(known)):
        raise UserError(f"unknown metrics {unknown}: choose metrics=[...] from {', '.join(known)}")
    if "kid" in metrics:  # KID's unbiased estimate averages over pairs
        check_ranges(cfg, [positive_int("kid_subsets"),
                           Range("kid_subset_size", int, lambda v: v >= 2, "of 2 or more")])
    device = resolve_device(cfg.device)
    model = model_from_checkpoint(cfg.ckpt, cfg.weights, cfg.device) if cfg.ckpt else None
    if isinstance(model, Autoencoder):
        return reconstruction_quality(cfg, model, start)
    guider = build_guider(guider_spec(to_plain(cfg.guider), cfg.guidance_scale, cfg.classifier), cfg.weights,
                          cfg.device) if model else None
    labels = (list(cfg.class_labels) if cfg.class_labels is not None else model_classes(model)) if model else None
    prompts = read_prompts(cfg.prompt, to_plain(cfg.prompts)) if model else None
    if "bpd" in metrics and model is None:
        raise UserError("metrics=[bpd] needs ckpt=PATH (bits/dim is a likelihood of the model)")
    extractor = build_extractor(cfg.extractor, **({"inception_weights": cfg.inception_weights}
                                                  if cfg.extractor == "inception" else {}))
    data_cfg = data_config(cfg, model)
    feature_names = [m for m in metrics if m not in ("bpd", *TEXT_METRICS)]
    if any(m in TEXT_METRICS for m in metrics) and model is None:
        raise UserError("caption_accuracy and clip_score need ckpt=PATH (they sample from the prompts)")
    result: dict = {"name": cfg.name or ((model.run_config or {}).get("name") if model else None) or Path(str(cfg.fake)).name,
                    "date": datetime.datetime.now().isoformat(timespec="seconds"), "metrics_requested": metrics}

    real = None
    if any(m in feature_names for m in ("fid", "kid", "pr")):
        if cfg.real:
            real = extract(extractor, folder_images(cfg.real, cfg.ref_n, cfg.batch_size), device)[0]
            result["reference"] = {"id": None, "source": f"folder {Path(cfg.real).absolute()}", "n": len(real)}
        elif data_cfg is not None:
            ref = dataset_reference(extractor, data_cfg, cfg.split, cfg.ref_n, device, cfg.batch_size)
            real = ref.features
            result["reference"] = {"id": ref.id, "source": ref.fields, "n": len(real), "cache": str(ref.path),
                                   "cache_hit": ref.cached}
        else:
            raise UserError("no reference images: pass real=DIR or data=NAME (e.g. data=mnist)")

    seeds = list(cfg.seeds) if cfg.seeds is not None else [cfg.seed]
    runs, sampler, nfe = [], None, [None]
    for seed in seeds:
        text_metrics, text_skipped = build_text_metrics(metrics, data_cfg, prompts, cfg.clip_model, device)
        if model is not None:
            sampler = resolve_sampler(model.hparams.sampler, to_plain(cfg.sampler))
            batches = sampled_uint8(draw(model, cfg.n, sampler=sampler, seed=seed, batch_size=cfg.batch_size,
                                         class_labels=labels, prompts=prompts, guider=guider), nfe, text_metrics, prompts)
        else:
            batches = folder_images(cfg.fake, cfg.n, cfg.batch_size)
        t0 = time.perf_counter()
        fake, logits = extract(extractor, batches, device) if feature_names else (None, None)
        if not feature_names:  # text metrics only: the images still have to be drawn
            fake = torch.cat(list(batches)) if text_metrics else None
        values, skipped = feature_metrics(feature_names, fake, real, logits, kid_subsets=cfg.kid_subsets,
                                          kid_subset_size=cfg.kid_subset_size, is_splits=cfg.is_splits,
                                          pr_neighborhood=cfg.pr_neighborhood) if feature_names else ({}, [])
        if "bpd" in metrics:
            values |= bits_per_dim_of(model, data_cfg, cfg.bpd_n, seed)
        for metric in text_metrics:
            values |= metric.compute()
        values |= {"seed": seed, "n": len(fake) if fake is not None else 0, "seconds": time.perf_counter() - t0}
        runs.append(values)
    for message in skipped:
        print(message)
    for message in text_skipped:
        print(message)
    result["skipped"] = skipped + text_skipped

    summary = {}
    for key in SUMMARY_KEYS + ("bpd",):
        vals = [r[key] for r in runs if key in r]
        if vals:
            summary[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "min": float(np.min(vals))}
    result |= {
        "summary": summary, "runs": runs, "n": cfg.n if model else runs[0]["n"], "seeds": seeds,
        "seed_derivation": "image i of seed s: numpy SeedSequence([s, i]) (batch-size independent)" if model else None,
        "fake_source": f"checkpoint {Path(cfg.ckpt).absolute()}" if model else f"folder {Path(cfg.fake).absolute()}",
        "checkpoint_sha256": file_sha256(Path(cfg.ckpt)) if model else None,
        "weights": cfg.weights if model else None,
        "sampler": sampler, "sampler_steps": (sampler or {}).get("steps"), "nfe": nfe[0],
        "guider": guider.name if guider else None, "guidance_scale": guider.scale if guider else None,
        "class_labels": labels, "prompts": prompts,
        "text_encoder": describe_text_encoders(model.conditioner) if model else None,
        "extractor": extractor.name, "extractor_weights": extractor.weights_id,
        "preprocessing": "samples quantised to uint8 as saved PNGs; " + extractor.preprocessing,
        "split": cfg.split if real is not None and not cfg.real else None,
        "versions": versions(), "device": str(device), "wall_seconds": time.perf_counter() - start,
    }
    write(result, cfg)
    return result


def reconstruction_quality(cfg: DictConfig, model: Autoencoder, start: float) -> dict:
    """An autoencoder checkpoint (a first stage): PSNR / SSIM / rFID and, for VQ, codebook usage of its
    reconstructions of the first ``n`` images of ``reconstruction_split`` (:func:`reconstruction_metrics`)."""
    data_cfg = data_config(cfg, model)
    if data_cfg is None:
        raise UserError(f"'{cfg.ckpt}' stores no data config; pass data=NAME to choose the images to reconstruct")
    dataset = dataset_split(data_cfg, cfg.reconstruction_split)
    count = min(cfg.n or len(dataset), len(dataset))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(count)), batch_size=cfg.batch_size)
    extractor = build_extractor(cfg.extractor, **({"inception_weights": cfg.inception_weights}
                                                  if cfg.extractor == "inception" else {}))
    values = reconstruction_metrics(model.autoencoder, (b["image"] for b in loader), extractor=extractor,
                                    device=model.device)
    summary = {key: {"mean": values[key], "std": values.get(f"{key}_std", 0.0), "min": values[key]}
               for key in ("psnr", "ssim", "rfid", "codebook_usage", "perplexity") if key in values}
    result = {
        "name": cfg.name or (model.run_config or {}).get("name") or Path(str(cfg.ckpt)).stem,
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "metrics_requested": ["psnr", "ssim", "rfid"],
        "summary": summary, "runs": [values], "n": values["n"], "seeds": [None], "split": cfg.reconstruction_split,
        "reference": {"id": None, "source": {"data": data_cfg}, "n": values["n"]},
        "protocol": "reconstructions from the KL posterior's mode (VQ: quantized codes), clipped to [-1, 1]; PSNR/SSIM "
                    "per image on [0, 1] (torchmetrics, data range 1, SSIM 11x11 Gaussian), mean ± std; rFID between "
                    "the originals and their reconstructions, both uint8",
        "fake_source": f"reconstructions by checkpoint {Path(cfg.ckpt).absolute()}",
        "checkpoint_sha256": file_sha256(Path(cfg.ckpt)), "weights": cfg.weights,
        "sampler": None, "sampler_steps": None, "nfe": None, "guider": None, "guidance_scale": None,
        "extractor": extractor.name, "extractor_weights": extractor.weights_id,
        "versions": versions(), "device": str(model.device), "wall_seconds": time.perf_counter() - start,
    }
    write(result, cfg)
    return result


def write(result: dict, cfg: DictConfig) -> None:
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir) / "result.json"
    atomic_write_text(out, json.dumps(result, indent=2, default=str))
    lines = [f"{k}: {v['mean']:.6g}" + (f" ± {v['std']:.3g} (min {v['min']:.6g})" if len(result["seeds"]) > 1 else "")
             for k, v in result["summary"].items()]
    print(f"{result['name']}: " + ", ".join(lines) + f"  [{result['wall_seconds']:.1f} s]\nwrote {out}")
    if cfg.csv:
        append_csv(Path(cfg.csv), csv_row(result, out))


def csv_row(result: dict, json_path: Path) -> dict:
    row = {"name": result["name"], "date": result["date"]}
    source = (result.get("reference") or {}).get("source")
    if isinstance(source, dict):
        row["dataset"] = f"{source['data'].get('_target_', '').rsplit('.', 1)[-1]} {source['data'].get('variant') or ''}".strip()
    for key, stats in result["summary"].items():
        row |= {key: stats["mean"], f"{key}_std": stats["std"], f"{key}_min": stats["min"]}
    ref = result.get("reference") or {}
    row |= {"n": result["n"], "seeds": " ".join(map(str, result["seeds"])), "reference_id": ref.get("id"),
            "reference_n": ref.get("n"), "split": result["split"], "sampler": (result["sampler"] or {}).get("algorithm"),
            "steps": result["sampler_steps"], "nfe": result["nfe"], "guider": result["guider"],
            "guidance_scale": result["guidance_scale"],
            "weights": result["weights"], "checkpoint_sha256": result["checkpoint_sha256"],
            "extractor": result["extractor"], "extractor_weights": result["extractor_weights"],
            "torch_fidelity": result["versions"]["torch-fidelity"], "torch": result["versions"]["torch"],
            "wall_seconds": round(result["wall_seconds"], 1), "json": str(json_path)}
    return row


def append_csv(path: Path, row: dict) -> None:
    """Append a row; a file with other columns gets the union of both.  The file is rewritten whole (atomically)
    under a lock, so concurrent evaluations appending to one CSV keep every row, each whole."""
    with locked(path):
        rows = list(csv.DictReader(path.open(newline=""))) if path.is_file() else []
        columns = list(dict.fromkeys([*(rows[0].keys() if rows else []), *row]))

        text = io.StringIO()
        writer = csv.DictWriter(text, columns)
        writer.writeheader()
        writer.writerows([*rows, row])
        atomic_write_text(path, text.getvalue())


main = entry_point("evaluate")(evaluate)


if __name__ == "__main__":
    main()
