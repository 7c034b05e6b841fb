"""Editing entry point: training-free tasks on any unconditional checkpoint (:mod:`lit_diffusion.tasks`).

    python -m lit_diffusion.edit task=repaint ckpt=PATH [data=fashion_mnist] mask=wide n=64 out=DIR
    python -m lit_diffusion.edit task=sdedit ckpt=PATH guide=blur2 task.t0=0.5
    python -m lit_diffusion.edit task=ilvr ckpt=PATH task.factor=4
    python -m lit_diffusion.edit task=ddib ckpt=SOURCE.ckpt target_ckpt=TARGET.ckpt

Takes items ``first … first + n − 1`` of a split of the checkpoint's dataset (or ``data=NAME``), degraded by
a pair transform chosen by name (``mask=``, ``guide=``; :mod:`lit_diffusion.tasks.degradations`), runs the
task with the model's unconditional denoiser (EMA weights unless ``weights=raw``) and writes to ``out``:
``input.png | output.png | reference.png`` grids, the images in ``input/``, ``output/``, ``reference/`` and
``metrics.json`` (PSNR/SSIM where there is a ground truth, the task's own metrics, KID against the split,
NFE, and the protocol: task options, sampler, seeds, checkpoint SHA-256, wall time).  Image i draws its noise
from (seed, first + i) only, whatever the batch size.
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any

import torch
import torchvision
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from lit_diffusion.checkpoint import model_from_checkpoint, resolve_device
from lit_diffusion.cli import entry_point
from lit_diffusion.config import check_ranges, positive_int, to_plain
from lit_diffusion.errors import UserError
from lit_diffusion.images import save_grid, to_uint8
from lit_diffusion.metrics import build_extractor, dataset_reference, extract, feature_metrics
from lit_diffusion.metrics.features import file_sha256
from lit_diffusion.metrics.images import dataset_split
from lit_diffusion.metrics.judge import classification_accuracy
from lit_diffusion.randomness import PerImageGenerator
from lit_diffusion.sampling import resolve_sampler
from lit_diffusion.tasks import ddib, ilvr, low_pass, repaint, sdedit
from lit_diffusion.tasks.common import sampler_grid
from lit_diffusion.tasks.degradations import GUIDE_KEY, MASK_KEY, MASKED_KEY, guide_config, mask_config
from lit_diffusion.tasks.repaint import down_moves
from lit_diffusion.tasks.sdedit import start_level

TASKS = ("repaint", "sdedit", "ilvr", "ddib")
SEED_DERIVATION = "image i: numpy SeedSequence([seed, first + i]) (batch-size independent)"


def unconditional(model):
    """D(x, σ) of an unconditional model, as samplers call it."""
    if model.conditioner.input_keys:
        raise UserError(f"the editing tasks need an unconditional model; this checkpoint is conditioned on "
                        f"{model.conditioner.input_keys}: use one trained with conditioner=none")
    return conditioned(model, {})


def conditioned(model, conditions: dict[str, Tensor]):
    """D(x, σ) of ``model`` under fixed raw conditions (e.g. ``{"label": labels}``, one per image)."""
    cond = model.conditioner(conditions)
    return lambda x, sigma: model.sampling_denoiser(x, sigma, cond)


def class_pairs(pairs, models: dict) -> Tensor:
    """``task.class_pairs`` as a lookup tensor (source class k → target class pairs[k]), after checking that both
    models are class-conditional."""
    for role, model in models.items():
        if model.conditioner.input_keys != ["label"]:
            raise UserError(f"task.class_pairs translates between class-conditional models, but the {role} checkpoint "
                            f"is conditioned on {model.conditioner.input_keys or 'nothing'}: train both with "
                            f"conditioner=class (e.g. experiment=cfg_mnist), or set task.class_pairs=null")
    return torch.as_tensor(list(pairs), dtype=torch.long, device=models["source"].device)


def data_config(cfg: DictConfig, model, pairs: dict | None) -> dict:
    data = to_plain(cfg.get("data")) or (model.run_config or {}).get("data")
    if data is None:
        raise UserError("this checkpoint has no run config to take its dataset from: pass data=NAME (e.g. data=mnist)")
    data = dict(data)
    if cfg.data_root:
        data["root"] = cfg.data_root
    data["pairs"] = pairs
    return data


def task_sampler(model, options: dict, requested: dict) -> dict:
    """The checkpoint's sampler, or the task's default algorithm (``task.algorithm``), with ``sampler.*``
    overrides; ``sampler=NAME`` replaces both."""
    stored = dict(model.hparams.sampler)
    if options.get("algorithm"):
        stored = {"algorithm": options["algorithm"], "steps": options.get("steps")}
    elif options.get("steps") is not None:
        stored["steps"] = options["steps"]
    return resolve_sampler(stored, requested)


def psnr_ssim(output: Tensor, target: Tensor) -> dict:
    """Mean PSNR and SSIM over images in [-1, 1] (data range 2), as uint8-quantised PNGs."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    out, ref = (to_uint8(t).double() / 255 for t in (output, target))
    psnr = peak_signal_noise_ratio(out, ref, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(out, ref, data_range=1.0, reduction="none")
    return {"psnr": psnr.mean().item(), "ssim": ssim.mean().item()}


def masked_metrics(output: Tensor, target: Tensor, mask: Tensor) -> dict:
    """Errors inside the missing region (mask 0) and the largest change in the known region (should be 0)."""
    missing = (1 - mask).expand_as(output)
    count = missing.flatten(1).sum(1).clamp(min=1)
    mse = (((output - target) ** 2) * missing).flatten(1).sum(1) / count
    known_error = ((output - target).abs() * mask.expand_as(output)).max().item()
    return {"missing_mse": mse.mean().item(),
            "missing_psnr": (10 * torch.log10(4 / mse.clamp(min=1e-12))).mean().item(),
            "missing_fraction": missing.flatten(1).mean(1).mean().item(), "known_max_abs_error": known_error}


def first_items(cfg: DictConfig, dataset) -> range:
    """Items first … first + n − 1 of the split (all from ``first`` on when n is null)."""
    stop = len(dataset) if cfg.n is None else cfg.first + cfg.n
    if cfg.first < 0 or stop > len(dataset) or stop <= cfg.first:
        raise UserError(f"first={cfg.first} and n={cfg.n} ask for items {cfg.first} … {stop - 1}, but the {cfg.split} "
                        f"split has {len(dataset)} images")
    return range(cfg.first, stop)


def run_batches(cfg: DictConfig, model, dataset, run, items=None) -> dict[str, Any]:
    """Apply ``run(batch, generator, first)`` to ``items`` (default :func:`first_items`), image i of them drawing
    from the stream (seed, first + i); concatenates what it returns."""
    items = first_items(cfg, dataset) if items is None else items
    parts: dict[str, list] = {}
    nfe = None
    done = cfg.first
    for batch in DataLoader(Subset(dataset, items), batch_size=cfg.batch_size, shuffle=False):
        batch = {k: v.to(model.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        size = batch["image"].shape[0]
        generator = PerImageGenerator(cfg.seed, done, size, model.device)
        out = run(batch, generator, done)
        nfe = out.pop("nfe")
        for key, value in out.items():
            parts.setdefault(key, []).append(value.detach().cpu())
        done += size
        print(f"{cfg.task.name}: {done - cfg.first}/{len(items)} images")
    return {**{k: torch.cat(v) for k, v in parts.items()}, "nfe": nfe}


def kid_of(cfg: DictConfig, images: Tensor, data_cfg: dict, device) -> dict:
    """KID of ``images`` against the ``split`` of ``data_cfg`` (cached Inception features)."""
    extractor = build_extractor(cfg.extractor)
    reference = dataset_reference(extractor, {**data_cfg, "pairs": None}, cfg.split, None, device)
    fake = extract(extractor, [to_uint8(images)], device)[0]
    values, _ = feature_metrics(["kid"], fake, reference.features, None, kid_subsets=cfg.kid_subsets)
    return {**values, "kid_reference": {"id": reference.id, "split": cfg.split, "n": len(reference.features)},
            "extractor": extractor.name}


def edit(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    options = to_plain(cfg.task) or {}
    name = options.get("name")
    if name not in TASKS:
        raise UserError(f"unknown task '{name}': choose task=repaint, sdedit, ilvr or ddib")
    check_ranges(cfg, [positive_int("n"), positive_int("batch_size")])
    if name == "ddib" and not cfg.target_ckpt:
        raise UserError("task=ddib translates between two models: pass the source model as ckpt=PATH and the "
                        "target model as target_ckpt=PATH")
    if name != "ddib" and cfg.target_ckpt:
        raise UserError(f"target_ckpt is only read by task=ddib, not by task={name}; drop it")
    pairs = {"repaint": lambda: {"degradation": mask_config(cfg.mask)},
             "sdedit": lambda: {"degradation": guide_config(cfg.guide)}}.get(name, lambda: None)()
    device = resolve_device(cfg.device)
    model = model_from_checkpoint(cfg.ckpt, cfg.weights, cfg.device)
    denoiser = None if name == "ddib" else unconditional(model)
    sampler = task_sampler(model, options, to_plain(cfg.sampler))
    data_cfg = data_config(cfg, model, pairs)
    dataset = dataset_split(data_cfg, cfg.split)
    process = model.process
    extra: dict[str, Any] = {}
    kid_data = data_cfg

    if name == "repaint":
        def run(batch, generator, first):
            result = repaint(denoiser, process, batch["image"], batch[MASK_KEY], sampler, generator,
                             jump_length=options["jump_length"], resamplings=options["resamplings"])
            return {"input": batch[MASKED_KEY], "output": result.images.clamp(-1, 1), "reference": batch["image"],
                    "mask": batch[MASK_KEY], "nfe": result.nfe}
        extra["schedule_steps"] = down_moves(len(sampler_grid(process, sampler)) - 1, options["jump_length"],
                                             options["resamplings"])
    elif name == "sdedit":
        if (options.get("t0") is None) == (options.get("sigma_start") is None):
            raise UserError("task=sdedit needs exactly one of task.t0 (a fraction of the diffusion time) and "
                            "task.sigma_start (set the other to null)")
        t0, sigma_start = options.get("t0"), options.get("sigma_start")

        def run(batch, generator, first):
            guide = batch.get(GUIDE_KEY, batch["image"])
            result = sdedit(denoiser, process, guide, sampler, generator, t0=t0, sigma_start=sigma_start)
            return {"input": guide, "output": result.images.clamp(-1, 1), "reference": batch["image"], "nfe": result.nfe}
        level, steps = start_level(process, sampler, t0, sigma_start)
        extra |= {"sigma_start_used": level, "steps_taken": steps}
    elif name == "ilvr":
        factor, filter_ = options["factor"], options["filter"]

        def run(batch, generator, first):
            reference = batch["image"]
            kwargs = {"factor": factor, "filter": filter_, "stop_sigma": options["stop_sigma"]}
            result = ilvr(denoiser, process, reference, sampler, generator, **kwargs)
            out = {"input": low_pass(reference, factor, filter_), "output": result.images.clamp(-1, 1),
                   "reference": reference, "nfe": result.nfe}
            if options.get("diversity"):
                second = PerImageGenerator(cfg.seed + 1, first, reference.shape[0], model.device)
                out["second"] = ilvr(denoiser, process, reference, sampler, second, **kwargs).images.clamp(-1, 1)
            return out
    else:
        target = model_from_checkpoint(cfg.target_ckpt, cfg.weights, cfg.device)
        if options.get("class_pairs") is None:
            pairs_of, fixed = None, (unconditional(model), unconditional(target))
        else:
            pairs_of = class_pairs(options["class_pairs"], {"source": model, "target": target})
        kid_data = {**(to_plain(target.run_config or {}).get("data") or data_cfg), "pairs": None}
        if cfg.data_root:
            kid_data["root"] = cfg.data_root

        def run(batch, generator, first):
            source, out = batch["image"], {}
            if pairs_of is None:
                there, back = fixed
            else:
                labels = batch["label"].long()
                if labels.max() >= len(pairs_of):
                    raise UserError(f"task.class_pairs names a target for classes 0 … {len(pairs_of) - 1}, but the "
                                    f"source data has class {labels.max().item()}: give one target per source class")
                out["target_label"] = pairs_of[labels]
                there, back = conditioned(model, {"label": labels}), conditioned(target, {"label": out["target_label"]})
            forward = ddib(there, process, back, target.process, source, sampler)
            out |= {"input": source, "output": forward.images.clamp(-1, 1), "latent": forward.latents,
                    "nfe": forward.nfe}
            if options.get("cycle"):
                out["reference"] = ddib(back, target.process, there, process, forward.images,
                                        sampler).images.clamp(-1, 1)
            return out

    with torch.no_grad():
        parts = run_batches(cfg, model, dataset, run)
    sampling_seconds = time.perf_counter() - start
    metrics = task_metrics(name, parts, options)
    if "target_label" in parts:  # DDIB between class pairs: does the target's judge see the paired class?
        metrics |= classification_accuracy(parts["output"], parts["target_label"], kid_data)
    if cfg.kid:
        metrics |= kid_of(cfg, parts["output"], kid_data, device)
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir)
    files = write_images(out, parts, cfg.nrow)
    result = {
        "task": name, "task_options": options, "degradation": {"mask": cfg.mask} if name == "repaint" else
        {"guide": cfg.guide} if name == "sdedit" else None, "pairs": pairs,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "n": cfg.n, "first": cfg.first, "split": cfg.split, "seed": cfg.seed, "seed_derivation": SEED_DERIVATION,
        "data": {k: v for k, v in data_cfg.items() if k != "pairs"},
        "checkpoint": str(Path(cfg.ckpt).absolute()), "checkpoint_sha256": file_sha256(Path(cfg.ckpt)),
        "target_checkpoint": str(Path(cfg.target_ckpt).absolute()) if cfg.target_ckpt else None,
        "target_checkpoint_sha256": file_sha256(Path(cfg.target_ckpt)) if cfg.target_ckpt else None,
        "weights": cfg.weights, "sampler": sampler, "nfe": parts["nfe"], **extra, "metrics": metrics,
        "files": files, "device": str(device), "sampling_seconds": sampling_seconds,
        "wall_seconds": time.perf_counter() - start,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    print(f"{name}: {shown}; NFE per image {parts['nfe']} [{result['wall_seconds']:.1f} s]\nwrote {out}")
    return result


def task_metrics(name: str, parts: dict, options: dict) -> dict:
    output, reference = parts["output"], parts.get("reference")
    metrics: dict[str, Any] = {}
    if name == "repaint":
        metrics |= psnr_ssim(output, reference) | masked_metrics(output, reference, parts["mask"])
    elif name == "sdedit":
        guide = parts["input"]
        metrics |= psnr_ssim(output, reference)
        metrics |= {"guide_mse": ((output - guide) ** 2).mean().item(),
                    "guide_l2": (output - guide).flatten(1).norm(dim=1).mean().item()}
    elif name == "ilvr":
        factor, filter_ = options["factor"], options["filter"]
        metrics |= psnr_ssim(output, reference)
        metrics["lowpass_mse"] = ((low_pass(output, factor, filter_) - low_pass(reference, factor, filter_)) ** 2).mean().item()
        if "second" in parts:
            metrics["diversity_mse"] = ((output - parts["second"]) ** 2).mean().item()
    else:
        if reference is not None:
            metrics["cycle_mse"] = ((reference - parts["input"]) ** 2).mean().item()
            metrics["cycle_psnr"] = psnr_ssim(reference, parts["input"])["psnr"]
        metrics["latent_std"] = parts["latent"].std().item()
    return metrics


def write_images(out: Path, parts: dict, nrow: int | None) -> dict:
    """``input.png``, ``output.png``, ``reference.png`` grids and each image under ``input/`` etc."""
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for key in ("input", "output", "reference"):
        if key not in parts:
            continue
        folder = out / key
        folder.mkdir(exist_ok=True)
        for i, image in enumerate(to_uint8(parts[key])):
            torchvision.io.write_png(image, str(folder / f"{i:06d}.png"))
        files[key] = str(save_grid(parts[key], out / f"{key}.png", nrow))
    return files


main = entry_point("edit")(edit)

if __name__ == "__main__":
    main()
