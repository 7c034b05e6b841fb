"""Evaluating an image-conditioned model (SR3, Palette) on a split of its data: ``evaluate task=sr | palette``.

    python -m lit_diffusion.evaluate task=sr ckpt=PATH [n=1000] [sampler.steps=100] [out=DIR]
    python -m lit_diffusion.evaluate task=sr ckpt=PATH task.output=bicubic      # the bicubic baseline
    python -m lit_diffusion.evaluate task=sr ckpt=PATH data=celebahq data.root=DIR data.image_size=128  # other images
    python -m lit_diffusion.evaluate task=palette ckpt=PATH task.degradation=inpaint   # one of a OneOf's choices

Items ``first … first + n − 1`` of the split (of the checkpoint's dataset, or ``data=NAME``) are degraded by
the checkpoint's own pair transforms (the ``data.pairs`` it was trained with, e.g. ``LowResolution`` ×4), the
model is given their conditions and draws one output per item (EMA weights unless ``weights=raw``; image i from
the noise stream (seed, first + i)), or, with ``task.output=bicubic``, the bicubic-upsampled input itself is the
output (``task=palette``: ``task.output=input``, the degraded image).  Metrics against the references (the clean
items):

- ``psnr``, ``ssim``: mean over images, both as uint8 PNGs (data range 1; torchmetrics, SSIM's 11×11 Gaussian
  window);
- ``consistency``: SR3's consistency (Saharia et al. 2021, Table 2), the MSE between the output downsampled by
  the data's own operator and the low-resolution input (= the reference downsampled by it), pixels in [0, 1];
  the paper prints it in units of 10⁻⁵;
- ``masked`` (palette): errors inside the missing region and the largest change of the known pixels, for
  degradations with missing pixels (inpainting, uncropping);
- ``diversity`` (palette): a second output per item (seed + 1) and the mean SSIM / MSE between the two (Palette
  compares the sample diversity of its L2 and L1 models by pairwise SSIM; lower SSIM = more diverse);
- ``accuracy``: classification accuracy of the outputs by an independent judge (:func:`~lit_diffusion.metrics.judge.classification_accuracy`);
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
from lit_diffusion.config import check_ranges, positive_int, safe_instantiate, to_plain
from lit_diffusion.datamodules.pairs import LowResolution, OneOf, PairTransform, one_of
from lit_diffusion.edit import data_config, masked_metrics, psnr_ssim, run_batches
from lit_diffusion.errors import UserError
from lit_diffusion.images import interleave_rows, save_grid, to_uint8
from lit_diffusion.metrics import build_extractor, dataset_reference, extract, feature_metrics
from lit_diffusion.metrics.features import file_sha256
from lit_diffusion.metrics.images import dataset_split
from lit_diffusion.metrics.judge import classification_accuracy
from lit_diffusion.provenance import versions
from lit_diffusion.sampling import resolve_sampler

TASKS = {  # name: (outputs, metrics, what trains the checkpoint)
    "sr": (("model", "bicubic"), ("psnr", "ssim", "consistency", "accuracy", "fid", "kid"), "a LowResolution pair"),
    "palette": (("model", "input"), ("psnr", "ssim", "masked", "diversity", "accuracy", "fid", "kid"), "a OneOf pair"),
}
SEED_DERIVATION = "image i: numpy SeedSequence([seed, first + i]) (batch-size independent)"
PROTOCOL = {
    "psnr_ssim": "images quantised to uint8 (as PNGs), data range 1, mean over images; SSIM: torchmetrics 11x11 "
                 "Gaussian window",
    "consistency": "MSE between output and reference after the data's own downsampling, pixels in [0, 1] (SR3 "
                   "Table 2 prints it x 1e5)",
    "masked": "MSE / PSNR (data range 2) over the missing pixels (mask 0) only; known_max_abs_error over the known ones",
    "diversity": "two outputs per item (seeds s and s + 1): mean SSIM and MSE between them",
    "accuracy": "top-1 accuracy of the outputs' true classes by a small CNN trained on the data's real training "
                "images (lit_diffusion.metrics.judge, seed 0, cached): a proxy of SR3's and Palette's ImageNet "
                "ResNet-50 classification accuracy",
}


def consistency(outputs: Tensor, references: Tensor, degradation: LowResolution) -> float:
    """SR3's consistency: mean squared difference, in [0, 1] pixel units, between the outputs and the references
    both downsampled by ``degradation`` (the references' downsampled copies are the low-resolution inputs)."""
    size = (outputs.shape[-2] // degradation.factor, outputs.shape[-1] // degradation.factor)
    down_out, down_ref = (degradation.resize(images.float(), size) for images in (outputs, references))
    return (((down_out - down_ref) / 2) ** 2).mean().item()


def pair_writing(dataset, key: str, kind: type) -> PairTransform:
    """The data's pair transform of class ``kind`` that writes the batch key ``key``."""
    for pair in getattr(dataset, "pairs", ()):
        if isinstance(pair, kind) and key in pair.keys:
            return pair
    raise UserError(f"the data has no {kind.__name__} pair writing '{key}': evaluate a checkpoint trained with one "
                    "(e.g. experiment=sr3_fashion_mnist or palette_fashion_mnist), or set task.key to the key it writes")


def only_choice(pairs: dict | None, key: str, choice: str | None) -> dict | None:
    """``pairs`` with the :class:`OneOf` writing ``key`` reduced to its choice ``choice`` (None: unchanged)."""
    if choice is None:
        return pairs
    for name, config in (pairs or {}).items():
        if config and str(config.get("_target_", "")).endswith(".OneOf") and config.get("key", "source") == key:
            if choice not in config["choices"]:
                raise UserError(f"task.degradation={choice} is not one of the model's {sorted(config['choices'])}")
            return {**pairs, name: {**config, "choices": {choice: config["choices"][choice]}}}
    raise UserError(f"task.degradation={choice}, but the data has no OneOf pair writing '{key}'")


def describe(degradation: PairTransform) -> dict:
    """The degradation as recorded in the result: its class and options (a OneOf's choices by name)."""
    if isinstance(degradation, OneOf):
        return {"pair": "OneOf", "choices": list(degradation.choices)}
    return {"pair": type(degradation).__name__, "keys": list(degradation.keys),
            **{k: v for k, v in vars(degradation).items() if isinstance(v, (bool, int, float, str))}}


def quality_metrics(parts: dict, metrics: list[str], degradation: PairTransform) -> dict:
    """The pixel metrics of :data:`TASKS` that ``metrics`` asks for (not FID / KID)."""
    outputs, references = parts["output"], parts["reference"]
    values = {k: v for k, v in psnr_ssim(outputs, references).items() if k in metrics}
    if "consistency" in metrics:
        values["consistency"] = consistency(outputs, references, degradation)
    if "masked" in metrics and (parts["mask"] < 1).any():
        values |= masked_metrics(outputs, references, parts["mask"])
    if "diversity" in metrics and "second" in parts:
        values |= {"pairwise_ssim": psnr_ssim(outputs, parts["second"])["ssim"],
                   "pairwise_mse": ((outputs - parts["second"]) ** 2).mean().item()}
    return values


def image_to_image(cfg: DictConfig) -> dict:
    """``evaluate task=sr | palette``: the outputs of an image-conditioned checkpoint (or its inputs) on a split."""
    start = time.perf_counter()
    options = to_plain(cfg.task)
    name = options["name"]
    outputs_allowed, metrics_allowed, trained_with = TASKS[name]
    output = one_of("task.output", options.get("output"), outputs_allowed)
    metrics = list(cfg.metrics)
    if unknown := sorted(set(metrics) - set(metrics_allowed)):
        raise UserError(f"task={name} has no metrics {unknown}: choose from {', '.join(metrics_allowed)}")
    if not cfg.ckpt:
        raise UserError(f"task={name} evaluates a checkpoint trained with {trained_with} (its data and pairs are read "
                        f"from it; task.output={outputs_allowed[1]} scores its inputs as the baseline): pass ckpt=PATH")
    check_ranges(cfg, [positive_int("n"), positive_int("batch_size")])
    key = options["key"]
    device = resolve_device(cfg.device)
    model = model_from_checkpoint(cfg.ckpt, cfg.weights, cfg.device)
    if key not in model.conditioner.input_keys:
        raise UserError(f"task.key={key}, but the checkpoint is conditioned on {model.conditioner.input_keys or 'nothing'}:"
                        f" pass a checkpoint trained with {trained_with}")
    given, stored = to_plain(cfg.get("data")) or {}, (model.run_config or {}).get("data") or {}
    pairs = only_choice(given.get("pairs") or stored.get("pairs"), key, options.get("degradation"))
    data_cfg = data_config(cfg, model, pairs)  # data=NAME keeps the model's pairs
    dataset = dataset_split(data_cfg, cfg.split)
    degradation = pair_writing(dataset, key, LowResolution if name == "sr" else OneOf)
    sampler = resolve_sampler(model.hparams.sampler, to_plain(cfg.sampler)) if output == "model" else None
    diversity = output == "model" and "diversity" in metrics

    def run(batch, generator, first):
        out = {"input": batch[key], "reference": batch["image"],
               "mask": batch.get("mask", torch.ones_like(batch["image"][:, :1]))}
        if "label" in batch:
            out["label"] = batch["label"]
        if output != "model":
            return out | {"output": batch[key], "nfe": 0}
        conditions = {k: batch[k] for k in model.conditioner.input_keys}
        result = model.sample(len(batch["image"]), sampler, cfg.seed, conditions, first_index=first)
        if diversity:
            out["second"] = model.sample(len(batch["image"]), sampler, cfg.seed + 1, conditions, first_index=first).images
        return out | {"output": result.images, "nfe": result.nfe}

    with torch.no_grad():
        parts = run_batches(cfg, model, dataset, run)
    parts["output"] = parts["output"].clamp(-1, 1)
    values = quality_metrics(parts, metrics, degradation)
    if "accuracy" in metrics:
        values |= classification_accuracy(parts["output"], parts.get("label"), {**data_cfg, "pairs": None})
    reference = None
    if {"fid", "kid"} & set(metrics):
        extractor = build_extractor(cfg.extractor)
        count = len(parts["output"])
        reference = dataset_reference(extractor, {**data_cfg, "pairs": None}, cfg.split, cfg.first + count, device,
                                      cfg.batch_size)
        fake = extract(extractor, (to_uint8(b) for b in parts["output"].split(cfg.batch_size)), device)[0]
        scores, _ = feature_metrics([m for m in metrics if m in ("fid", "kid")], fake, reference.features[cfg.first:],
                                    None, kid_subsets=cfg.kid_subsets, kid_subset_size=cfg.kid_subset_size)
        values |= scores | {"extractor": extractor.name, "extractor_weights": extractor.weights_id}
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir)
    shown = min(options.get("grid", 24), len(parts["output"]))
    nrow = min(8, shown)
    grid = save_grid(interleave_rows([parts[k][:shown] for k in ("input", "output", "reference")], nrow),
                     out / "grid.png", nrow)
    result = {
        "task": name, "output": output, "degradation": describe(degradation) | {"evaluated": options.get("degradation")},
        "metrics": values,
        "n": len(parts["output"]), "first": cfg.first, "split": cfg.split, "seed": cfg.seed,
        "seed_derivation": SEED_DERIVATION if output == "model" else None,
        "name": cfg.name or (model.run_config or {}).get("name"),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "data": {k: v for k, v in data_cfg.items() if k != "pairs"}, "pairs": data_cfg.get("pairs"),
        "checkpoint": str(Path(cfg.ckpt).absolute()), "checkpoint_sha256": file_sha256(Path(cfg.ckpt)),
        "weights": cfg.weights, "sampler": sampler, "nfe": parts["nfe"],
        "protocol": {**{k: v for k, v in PROTOCOL.items() if k in metrics or k == "psnr_ssim"},
                     "fid_kid": None if reference is None else {
                         "reference": f"the same items' clean images ({cfg.split} split, items {cfg.first}…)",
                         "reference_id": reference.id}},
        "grid": str(grid), "versions": versions(), "device": str(device),
        "wall_seconds": time.perf_counter() - start,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    summary = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if isinstance(v, float))
    print(f"{name} ({output}): {summary}; NFE per image {parts['nfe']} [{result['wall_seconds']:.1f} s]\nwrote {out}")
    return result
