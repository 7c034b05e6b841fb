"""Evaluating a video diffusion checkpoint on its data: ``python -m lit_diffusion.evaluate task=video ckpt=PATH``.

Items ``first … first + n − 1`` of the split are the references.  With MCVD's masked conditioning
(:class:`~lit_diffusion.conditioning.KnownFramesEmbedder`) the model does three tasks on them, given frames built by
:func:`~lit_diffusion.datamodules.frame_masks.frame_mask` (``past``/``future`` as the model was trained, or
``task.past``/``task.future``); a model without it only the first:

- ``unconditional``: one video per item, nothing given;
- ``prediction``: ``task.samples`` videos per item (best of N) given its first ``past`` frames;
- ``interpolation``: one video per item given its first ``past`` and last ``future`` frames.

Per task (:mod:`lit_diffusion.metrics.video`): SSIM / PSNR over the generated frames (best and mean of N for
prediction), frame FID / KID against the references' frames, and the Fréchet distance of the features of a
:class:`~lit_diffusion.metrics.video_classifier.VideoClassifier` trained for ``task.classifier_steps`` on the
training split (cached), with its held-out accuracies (``task.classifier_steps=0``: no FD, for data without Moving
MNIST's digit labels).  Video i of a task draws from the stream (seed, i·K + k).
Writes ``metrics.json`` (with the protocol) and one GIF per task (given | generated | real rows) to ``out``.
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
from lit_diffusion.conditioning import KnownFramesEmbedder
from lit_diffusion.config import to_plain
from lit_diffusion.datamodules.frame_masks import TASKS, frame_mask, known_frames
from lit_diffusion.edit import data_config, first_items
from lit_diffusion.errors import UserError
from lit_diffusion.files import atomic_write
from lit_diffusion.metrics import build_extractor
from lit_diffusion.metrics.features import file_sha256
from lit_diffusion.metrics.images import dataset_split
from lit_diffusion.metrics.reference import cache_dir, reference_id
from lit_diffusion.metrics.video import best_of_n, frame_features, frame_fid_kid, frechet_distance
from lit_diffusion.metrics.video_classifier import VideoClassifier, classifier_accuracy, train_video_classifier
from lit_diffusion.provenance import versions
from lit_diffusion.sampling import resolve_sampler
from lit_diffusion.videos import interleave_video_rows, save_gif

PROTOCOL = {
    "ssim_psnr": "per generated frame as uint8 images in [0, 1] (torchmetrics, data range 1, SSIM 11x11 Gaussian), "
                 "averaged over the frames that were not given; prediction: best of task.samples per video (SSIM and "
                 "PSNR each chosen on its own, SVG/MCVD's SM-MNIST protocol) and the mean over all samples",
    "frame_fid_kid": "every generated frame (not the given ones) as an image (uint8) for the extractor, vs the same "
                     "frames of the same items' real videos",
    "fd": "Frechet distance of VideoClassifier features (global average pool of a 3-D CNN trained here on the training "
          "split: digit set + frame order), generated vs the same items' real videos; a stand-in for FVD's I3D "
          "features, not comparable with published FVDs",
}


def given_frames_key(model) -> str | None:
    """The batch key of the model's :class:`KnownFramesEmbedder`, or None without MCVD conditioning."""
    keys = [e.input_key for e in model.conditioner.embedders.values() if isinstance(e, KnownFramesEmbedder)]
    return keys[0] if keys else None


def trained_mask(model) -> dict:
    """The ``past``/``future`` of the FrameMask the checkpoint was trained with (5/5 if none is recorded)."""
    pairs = ((model.run_config or {}).get("data") or {}).get("pairs") or {}
    masks = [p for p in pairs.values() if p and str(p.get("_target_", "")).endswith(".FrameMask")]
    return {"past": masks[0].get("past", 5) if masks else 5, "future": masks[0].get("future", 5) if masks else 5}


def video_classifier(data_cfg: dict, steps: int, seed: int, channels: int) -> tuple[VideoClassifier, str, bool]:
    """The feature classifier for this data, trained once per (data, steps, seed) and cached beside the reference
    features; returns it, its cache id and whether it came from the cache."""
    key = reference_id({"video_classifier": 1, "data": {k: v for k, v in data_cfg.items() if k != "pairs"},
                        "steps": steps, "seed": seed})
    path = cache_dir() / f"video_classifier_{key}.pt"
    model = VideoClassifier(channels)
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval().requires_grad_(False), key, True
    model = train_video_classifier(dataset_split({**data_cfg, "pairs": None}, "train"), steps=steps, seed=seed,
                                   channels=channels)
    atomic_write(path, lambda file: torch.save(model.state_dict(), file))
    return model, key, False


def draw_videos(model, key: str | None, references: Tensor, mask: Tensor, repeats: int, sampler: dict, seed: int,
             batch_size: int) -> tuple[Tensor, int | None]:
    """``repeats`` videos per reference given its frames where ``mask`` (T,) is 1 (no condition without ``key``)."""
    known = known_frames(references, mask).repeat_interleave(repeats, 0)
    outputs, nfe = [], None
    for first in range(0, len(known), batch_size):
        chunk = known[first:first + batch_size].to(model.device)
        conditions = {} if key is None else {key: chunk}
        result = model.sample(len(chunk), sampler, seed, conditions, first_index=first)
        outputs.append(result.images.cpu())
        nfe = result.nfe
    return torch.cat(outputs).unflatten(0, (len(references), repeats)), nfe


def video_evaluation(cfg: DictConfig) -> dict:
    """``evaluate task=video`` (module docstring)."""
    start = time.perf_counter()
    options = to_plain(cfg.task)
    if not cfg.ckpt:
        raise UserError("task=video evaluates a video checkpoint (e.g. of experiment=video_moving_mnist): pass ckpt=PATH")
    if cfg.batch_size < 1 or (cfg.n is not None and cfg.n < 1) or options["samples"] < 1:
        raise UserError(f"n={cfg.n}, batch_size={cfg.batch_size} and task.samples={options['samples']} must be positive")
    device = resolve_device(cfg.device)
    model = model_from_checkpoint(cfg.ckpt, cfg.weights, cfg.device)
    if len(model.sample_shape) != 4:
        raise UserError(f"task=video needs a video checkpoint (samples (C, T, H, W)); this one draws {model.sample_shape}")
    if unknown := sorted(set(options["tasks"]) - set(TASKS)):
        raise UserError(f"task.tasks has unknown tasks {unknown}; choose from {', '.join(TASKS)}")
    key = given_frames_key(model)
    tasks = [t for t in options["tasks"] if key is not None or t == "unconditional"]
    masks = {**trained_mask(model), **{k: options[k] for k in ("past", "future") if options.get(k) is not None}}
    data_cfg = data_config(cfg, model, None)
    dataset = dataset_split(data_cfg, cfg.split)
    references = torch.stack([dataset[i]["image"] for i in first_items(cfg, dataset)])
    sampler = resolve_sampler(model.hparams.sampler, to_plain(cfg.sampler))
    classifier = None
    if options["classifier_steps"] > 0:
        classifier, classifier_id, cached = video_classifier(data_cfg, options["classifier_steps"], cfg.seed,
                                                             references.shape[1])
        real_features = classifier.features(references)
    extractor = build_extractor(cfg.extractor)
    real_frames = frame_features(extractor, references, device, cfg.batch_size)
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir)
    frames = references.shape[2]
    values, nfe, gifs = {}, None, {}
    for task in tasks:
        mask = frame_mask(task, frames, masks["past"], masks["future"])
        repeats = options["samples"] if task == "prediction" else 1
        with torch.no_grad():
            samples, nfe = draw_videos(model, key, references, mask, repeats, sampler, cfg.seed, cfg.batch_size)
        first, generated = samples[:, 0], mask == 0
        scores = best_of_n(samples, references, generated) if task != "unconditional" else {}
        scores |= frame_fid_kid(frame_features(extractor, first[:, :, generated], device, cfg.batch_size),
                                real_frames[generated.repeat(len(references))], cfg.kid_subsets, cfg.kid_subset_size)
        if classifier is not None:
            scores["fd"] = frechet_distance(classifier.features(first), real_features)
        values[task] = scores
        shown = min(options["grid"], len(references))
        gifs[task] = str(save_gif(interleave_video_rows([known_frames(references[:shown], mask)[:, :-1], first[:shown],
                                                         references[:shown]], shown), out / f"{task}.gif", shown))
    fd_features = None
    if classifier is not None:
        digits = torch.stack([dataset[i]["digits"] for i in first_items(cfg, dataset)])
        held_out = classifier_accuracy(classifier, references, digits, torch.Generator().manual_seed(cfg.seed))
        fd_features = {"network": "VideoClassifier (lit_diffusion.metrics.video_classifier)",
                       "dim": real_features.shape[1], "training_steps": options["classifier_steps"],
                       "cache_id": classifier_id, "cached": cached, "held_out": held_out}
    result = {
        "task": "video", "tasks": tasks, "metrics": values, "n": len(references), "first": cfg.first,
        "split": cfg.split, "seed": cfg.seed, "given_frames": masks, "frames": frames,
        "seed_derivation": "video i·K + k of a task (k < K samples per item): numpy SeedSequence([seed, i·K + k])",
        "name": cfg.name or (model.run_config or {}).get("name"),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "data": {k: v for k, v in data_cfg.items() if k != "pairs"},
        "checkpoint": str(Path(cfg.ckpt).absolute()), "checkpoint_sha256": file_sha256(Path(cfg.ckpt)),
        "weights": cfg.weights, "sampler": sampler, "nfe_per_video": nfe,
        "extractor": extractor.name, "extractor_weights": extractor.weights_id,
        "fd_features": fd_features,
        "protocol": PROTOCOL, "gifs": gifs, "versions": versions(), "device": str(device),
        "wall_seconds": time.perf_counter() - start,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    summary = "; ".join(f"{t}: " + ", ".join(f"{k} {v:.4g}" for k, v in s.items() if isinstance(v, float))
                        for t, s in values.items())
    print(f"video: {summary}; NFE per video {nfe} [{result['wall_seconds']:.1f} s]\nwrote {out}")
    return result
