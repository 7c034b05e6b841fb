"""Segmentation entry point: diffusion features, mask diffusion and a UNet from scratch on the same labelled
images (:mod:`lit_diffusion.tasks.segmentation`), for any segmentation DataModule (MNIST canvases, BraTS slices).

    python -m lit_diffusion.segment method=features ckpt=DDPM.ckpt labelled=10 out=DIR   # Baranchuk et al. 2022
    python -m lit_diffusion.segment method=diffusion ckpt=SEGDIFF.ckpt samples=4 out=DIR  # SegDiff / MedSegDiff
    python -m lit_diffusion.segment method=unet labelled=10 out=DIR                       # supervised baseline

A segmentation DataModule (one that sets ``segmentation_input``: see
:class:`~lit_diffusion.datamodules.base.ImageDataModule`) gives samples with a ``segmentation`` label map of
``num_classes`` classes and the image it segments: ``image``, or the ``segmentation_input`` key (``canvas``,
``scan``) when ``data.target=segmentation`` makes the one-hot map the ``image``.  Its ``labelled`` keeps the first
training images; its ``labelled_images`` counts the distinct ones.

``features``: an unconditional DDPM of the images (``segfeatures_mnist_canvas``) stays frozen; its decoder
features label the pixels of the first ``labelled`` training images, on which an ensemble of MLPs is trained
(at most ``features.max_pixels`` pixels, drawn uniformly).  ``diffusion``: a model that diffuses the one-hot
segmentation map given the image (``segdiff_mnist_canvas``, ``segdiff_brats``, trained on its ``data.labelled``
images) draws ``samples`` maps per image; their mean gives the labels, their variance the uncertainty.
``unet``: the same UNet trained by cross-entropy from scratch on the ``labelled`` images (as many input
channels as the image has).  Every method is scored on the first ``n`` validation images: mIoU, mean Dice,
per-class IoU/Dice and pixel accuracy (:mod:`lit_diffusion.metrics.segmentation`).  Written to ``out``:
``metrics.json`` (with NFE, wall time and the protocol), ``input.png | prediction.png | target.png`` grids
(``uncertainty.png`` for mask diffusion; an input that is neither grey nor RGB, e.g. four MRI modalities, is
shown by its first channel).
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Subset

from lit_diffusion.checkpoint import model_from_checkpoint, resolve_device
from lit_diffusion.cli import entry_point
from lit_diffusion.config import safe_instantiate, to_plain, trusted_class
from lit_diffusion.errors import UserError
from lit_diffusion.images import save_grid
from lit_diffusion.metrics.features import file_sha256
from lit_diffusion.metrics.segmentation import segmentation_metrics
from lit_diffusion.provenance import versions
from lit_diffusion.sampling import resolve_sampler
from lit_diffusion.tasks.features import DecoderFeatures
from lit_diffusion.tasks.segmentation import PixelEnsemble, PlainUNet, fit, sample_segmentations

METHODS = ("features", "diffusion", "unet")
PALETTE = torch.tensor([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190]]) / 255
"""The colours of the first 11 labels (background black) for the grids; :func:`palette` adds more."""
GOLDEN = (5 ** 0.5 - 1) / 2
GRID = 64
"""Validation images shown in the grids."""


def palette(classes: int) -> torch.Tensor:
    """(classes, 3) colours in [0, 1]: :data:`PALETTE`, then fully saturated hues spaced by the golden ratio."""
    hues = (torch.arange(max(classes - len(PALETTE), 0))[:, None] * GOLDEN) % 1
    extra = (((hues * 6 + torch.tensor([0, 4, 2])) % 6 - 3).abs() - 1).clamp(0, 1)  # HSV (hue, 1, 1) → RGB
    return torch.cat([PALETTE, extra])[:classes]


def batches(dataset, items, batch_size: int):
    return DataLoader(Subset(dataset, list(items)), batch_size=batch_size, shuffle=False)


def segmentation_data(data: dict):
    """The set-up DataModule of ``data``, checked to be a segmentation one, and the key of its segmented image."""
    if trusted_class(data["_target_"]).segmentation_input is None:
        raise UserError(f"{data['_target_']} is not a segmentation DataModule (samples with a 'segmentation' label "
                        "map and a segmentation_input); pass one, e.g. data=mnist_canvas or data=brats_nifti")
    datamodule = safe_instantiate(data)
    datamodule.setup("fit")
    if datamodule.val_set is None:
        raise UserError("the dataset has no validation split to score; set data.val_fraction > 0")
    if "segmentation" not in datamodule.val_set[0]:
        raise UserError(f"the {datamodule.dataset_name} samples have no 'segmentation' label maps; give the dataset "
                        "its labels (a slice folder: its masks/ folder)")
    return datamodule, datamodule.segmentation_input if datamodule.target == "segmentation" else "image"


def labelled_images(datamodule, key: str, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The DataModule's distinct labelled training images (its first ``labelled_images``) and their label maps."""
    parts = [(b[key], b["segmentation"])
             for b in batches(datamodule.train_set, range(datamodule.labelled_images), batch_size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def by_features(cfg: DictConfig, model, images, labels, classes: int, val_inputs, device) -> dict:
    """Baranchuk et al.: decoder features of the frozen DDPM, an MLP ensemble on the labelled pixels; the labels
    of ``val_inputs`` (batches of validation images)."""
    options = cfg.features
    if images.shape[1:] != model.sample_shape:
        raise UserError(f"the images are {tuple(images.shape[1:])} but the checkpoint's model draws "
                        f"{model.sample_shape}; method=features needs an unconditional DDPM of these images")
    extractor = DecoderFeatures(model, options.blocks, options.levels, cfg.seed)
    targets = labels.flatten()
    keep = torch.arange(len(targets))
    if len(targets) > options.max_pixels:  # a uniform draw of the labelled pixels, made before any feature exists
        draw = torch.randperm(len(targets), generator=torch.Generator().manual_seed(cfg.seed))
        keep = draw[:options.max_pixels].sort().values
    pixels, start = [], 0
    for x in images.split(cfg.batch_size):  # features of one batch at a time: all labelled pixels need not fit
        chunk = extractor(x.to(device)).cpu()
        flat = chunk.permute(0, 2, 3, 1).reshape(-1, chunk.shape[1])
        pixels.append(flat[keep[(keep >= start) & (keep < start + len(flat))] - start])
        start += len(flat)
    pixels, targets = torch.cat(pixels), targets[keep]
    ensemble = PixelEnsemble(pixels.shape[1], classes, options.members)
    losses = ensemble.fit(pixels, targets, steps=options.steps, batch_size=options.pixel_batch, lr=options.lr,
                          seed=cfg.seed)
    predicted = torch.cat([ensemble(extractor(x.to(device)).cpu()) for x in val_inputs])
    extractor.remove()
    return {"predicted": predicted, "nfe": len(extractor.sigmas), "feature_dim": pixels.shape[1],
            "training_pixels": len(pixels), "final_losses": losses}


def by_unet(cfg: DictConfig, images, labels, classes: int, val_inputs, device) -> dict:
    """The UNet trained from scratch by cross-entropy on the labelled images; the labels of ``val_inputs``."""
    options = cfg.unet
    torch.manual_seed(cfg.seed)
    network = PlainUNet(safe_instantiate(options.network, in_channels=images.shape[1], out_channels=classes,
                                         image_size=images.shape[-1])).to(device)
    loss = fit(network, images.to(device), labels.to(device), steps=options.steps, batch_size=options.batch_size,
               lr=options.lr, seed=cfg.seed)
    with torch.no_grad():
        predicted = torch.cat([network(x.to(device)).argmax(1).cpu() for x in val_inputs])
    return {"predicted": predicted, "nfe": 1, "final_loss": loss,
            "parameters": sum(p.numel() for p in network.parameters())}


def by_diffusion(cfg: DictConfig, model, val, items) -> dict:
    """Mask diffusion: ``samples`` maps per image given the model's conditions, averaged."""
    sampler = resolve_sampler(model.hparams.sampler, to_plain(cfg.sampler))
    keys = model.conditioner.input_keys
    predicted, uncertainty, nfe, first = [], [], None, 0
    for batch in batches(val, items, cfg.batch_size):
        conditions = {key: batch[key].to(model.device) for key in keys}
        labels, variance, nfe = sample_segmentations(model, conditions, samples=cfg.samples, sampler=sampler,
                                                     seed=cfg.seed, first=first)
        predicted.append(labels.cpu())
        uncertainty.append(variance.cpu())
        first += len(labels)
    return {"predicted": torch.cat(predicted), "uncertainty": torch.cat(uncertainty), "nfe": nfe * cfg.samples,
            "sampler": sampler, "samples": cfg.samples}


def segment(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    if cfg.method not in METHODS:
        raise UserError(f"unknown segmentation method '{cfg.method}': choose method={' | '.join(METHODS)}")
    if (cfg.method == "unet") == bool(cfg.ckpt):
        raise UserError("method=features and method=diffusion read a diffusion checkpoint (ckpt=PATH); method=unet "
                        "trains from scratch and takes none (ckpt=null)")
    device = resolve_device(cfg.device)
    model = model_from_checkpoint(cfg.ckpt, cfg.weights, cfg.device) if cfg.ckpt else None
    data = to_plain(cfg.get("data")) or ((model.run_config or {}).get("data") if model is not None else None)
    if data is None:
        raise UserError("no dataset: pass a segmentation DataModule, e.g. data=mnist_canvas or data=brats_nifti (the "
                        "checkpoint has no run config to take it from)")
    data = {**data, **({"root": cfg.data_root} if cfg.data_root else {})}
    datamodule, key = segmentation_data(data if cfg.method == "diffusion" else {**data, "labelled": cfg.labelled})
    classes, val, labelled = datamodule.num_classes, datamodule.val_set, datamodule.labelled_images
    items = range(len(val) if cfg.n is None else min(cfg.n, len(val)))
    result: dict[str, Any]
    if cfg.method == "diffusion":
        if datamodule.target != "segmentation" or key not in model.conditioner.input_keys:
            raise UserError(f"method=diffusion needs a model that diffuses segmentation maps given the image "
                            f"'{key}' (data.target=segmentation, e.g. experiment=segdiff_mnist_canvas); this one "
                            f"is conditioned on {list(model.conditioner.input_keys)}")
        result = by_diffusion(cfg, model, val, items)
    else:
        images, labels = labelled_images(datamodule, key, cfg.batch_size)
        val_inputs = (b[key] for b in batches(val, items, cfg.batch_size))
        result = (by_features(cfg, model, images, labels, classes, val_inputs, device) if cfg.method == "features"
                  else by_unet(cfg, images, labels, classes, val_inputs, device))
    target = torch.cat([b["segmentation"] for b in batches(val, items, cfg.batch_size)])
    inputs = torch.stack([val[i][key] for i in items[:GRID]])
    metrics = segmentation_metrics(result["predicted"], target, classes)
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir)
    files = write_grids(out, inputs, result, target, classes)
    record = {
        "task": "segmentation", "method": cfg.method, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "labelled_images": labelled, "metrics": metrics, "n_val": len(items),
        **{k: v for k, v in result.items() if k not in ("predicted", "uncertainty")},
        "options": to_plain(cfg.features) if cfg.method == "features" else to_plain(cfg.unet) if cfg.method == "unet"
        else None, "data": data, "seed": cfg.seed,
        "checkpoint": str(Path(cfg.ckpt).absolute()) if cfg.ckpt else None,
        "checkpoint_sha256": file_sha256(Path(cfg.ckpt)) if cfg.ckpt else None, "weights": cfg.weights,
        "files": files, "versions": versions(), "device": str(device), "wall_seconds": time.perf_counter() - start,
    }
    if "uncertainty" in result:
        wrong = result["predicted"] != target
        variance = result["uncertainty"]
        record["uncertainty"] = {"mean_variance_wrong_pixels": variance[wrong].mean().item() if wrong.any() else None,
                                 "mean_variance_right_pixels": variance[~wrong].mean().item()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(record, indent=2, default=str))
    print(f"segmentation ({cfg.method}, {labelled} labelled): mIoU {metrics['miou']:.4f}, Dice {metrics['dice']:.4f}, "
          f"pixel accuracy {metrics['pixel_accuracy']:.4f} [{record['wall_seconds']:.1f} s]\nwrote {out}")
    return record


def colour(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Label maps (B, H, W) of ``classes`` classes → RGB images in [-1, 1]."""
    return palette(classes)[labels].permute(0, 3, 1, 2) * 2 - 1


def write_grids(out: Path, inputs: torch.Tensor, result: dict, target: torch.Tensor, classes: int) -> dict:
    """The grids of the first :data:`GRID` images; inputs neither grey nor RGB (MRI modalities): their first channel."""
    grids = {"input": inputs if inputs.shape[1] in (1, 3) else inputs[:, :1],
             "prediction": colour(result["predicted"][:GRID], classes), "target": colour(target[:GRID], classes)}
    if "uncertainty" in result:
        variance = result["uncertainty"][:GRID, None]
        grids["uncertainty"] = variance / variance.amax().clamp(min=1e-12) * 2 - 1
    return {name: str(save_grid(images, out / f"{name}.png")) for name, images in grids.items()}


main = entry_point("segment")(segment)

if __name__ == "__main__":
    main()
