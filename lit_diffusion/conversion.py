"""Published diffusers pipelines as lit_diffusion checkpoints, so that ``sample`` and ``evaluate`` reproduce their
papers' tables unchanged.

A ``DDPMPipeline`` / ``DDIMPipeline`` folder (``google/ddpm-cifar10-32``: DDPM's CIFAR-10 model) or an
``LDMPipeline`` folder (``CompVis/ldm-celebahq-256``: LDM-VQ-4) becomes a :class:`~lit_diffusion.models.DDPM`:

* the ``unet/`` ``UNet2DModel`` is the network, unchanged, behind
  :class:`~lit_diffusion.networks.diffusers_unet.DiffusersUNet` (the preconditioning feeds it x_t and the
  timestep, as diffusers' schedulers do);
* the ``scheduler/`` config gives the discrete VP process (T, β schedule and range), the prediction target
  (``epsilon`` → ε, ``sample`` → x_0, ``v_prediction`` → v), x̂_0 clipping and the default sampler (DDIM with
  diffusers' ``leading`` timesteps, or ancestral over all T steps with the scheduler's variance);
* ``vqvae/`` (or ``vae/``) is the frozen first stage (:class:`~lit_diffusion.latent.FirstStage`).

**Latent scale factor.** ``LDMPipeline`` divides the final latents by ``vqvae.config.scaling_factor``; the
``CompVis/ldm-celebahq-256`` ``vqvae/config.json`` has no such key, so diffusers' ``VQModel`` default 0.18215
(Stable Diffusion's KL factor) applies, and its samples are corrupted (diffusers issue #6725: removing the
division fixes them).  CompVis trained that model with ``LatentDiffusion``'s default ``scale_factor: 1.0``
(``celebahq-ldm-vq-4.yaml`` sets none; LDM rescales only its KL latents, App. D.1), so a VQ first stage is
converted with factor 1 and a KL first stage with its config's ``scaling_factor``; ``scale_factor=`` overrides
both.  ``tests/test_conversion.py`` shows the converted model equal to the pipeline with factor 1 and different
from it with the default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import diffusers

from lit_diffusion.autoencoders.networks import downsampling_factor
from lit_diffusion.autoencoders.sources import CONFIG_FILE, WEIGHT_FILES, hub_snapshot, read_state_file, sha256_files
from lit_diffusion.errors import UserError
from lit_diffusion.models import DDPM
from lit_diffusion.resume import AtomicCheckpointIO

PIPELINES = ("DDPMPipeline", "DDIMPipeline", "LDMPipeline")
FIRST_STAGES = {"vqvae": "vq", "vae": "kl"}
SCHEDULER_FILE = "scheduler_config.json"
PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}
VARIANCES = {"fixed_small": "posterior", "fixed_small_log": "posterior", "fixed_large": "forward",
             "fixed_large_log": "forward", "learned_range": "learned"}
SPACINGS = ("leading", "linspace")
NETWORK_TARGET = "lit_diffusion.networks.diffusers_unet.DiffusersUNet"
DDIM_STEPS = 50  # diffusers' pipelines' default num_inference_steps


def pipeline_folder(source: str, revision: str | None = None) -> Path:
    """The local folder of ``source``: a folder path, or ``diffusers:OWNER/NAME`` (hub id, downloaded to the
    hub cache where the network is reachable) / ``diffusers:PATH``."""
    name = source.removeprefix("diffusers:")
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    if local.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise UserError(f"source={source}: neither a pipeline folder nor a hub id like diffusers:CompVis/ldm-celebahq-256")
    patterns = ["model_index.json", f"*/{CONFIG_FILE}", f"*/{SCHEDULER_FILE}", *(f"*/{f}" for f in WEIGHT_FILES)]
    return hub_snapshot(name, patterns, revision, "source=/path/to/folder")


def _json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path} is missing: a diffusers pipeline folder has model_index.json, unet/ and scheduler/ "
                        "(as written by save_pretrained)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err})") from None


def process_config(scheduler: dict, path: Path) -> dict:
    """The :class:`~lit_diffusion.processes.DiscreteVP` of a DDPM/DDIM scheduler config."""
    if scheduler.get("trained_betas") is not None:
        raise UserError(f"{path}: explicit trained_betas are not supported; only the named schedules {sorted(SCHEDULES)}")
    schedule = scheduler.get("beta_schedule", "linear")
    if schedule not in SCHEDULES:
        raise UserError(f"{path}: beta_schedule '{schedule}' has no counterpart here; supported: {sorted(SCHEDULES)}")
    config = {"_target_": "lit_diffusion.processes.DiscreteVP", "num_timesteps": int(scheduler.get("num_train_timesteps", 1000)),
              "schedule": SCHEDULES[schedule]}
    if schedule != "squaredcos_cap_v2":
        config |= {"beta_start": float(scheduler.get("beta_start", 1e-4)), "beta_end": float(scheduler.get("beta_end", 0.02))}
    return config


def sampler_config(scheduler: dict, path: Path) -> dict:
    """The sampler the pipeline runs: DDIM (η = 0, ``leading`` timesteps) for a DDIM scheduler, ancestral over
    every step with the scheduler's variance for a DDPM scheduler."""
    spacing = scheduler.get("timestep_spacing", "leading")
    if spacing not in SPACINGS or scheduler.get("steps_offset", 0):
        print(f"note: {path}: timestep_spacing={spacing}, steps_offset={scheduler.get('steps_offset', 0)} has no "
              "exact counterpart; the DDIM grid uses 'leading' timesteps 0, k, 2k, … (set sampler.grid.spacing)")
        spacing = "leading"
    if scheduler.get("_class_name") == "DDPMScheduler":
        variance = scheduler.get("variance_type", "fixed_small")
        if variance not in VARIANCES:
            raise UserError(f"{path}: variance_type '{variance}' is not supported; use one of {sorted(VARIANCES)}")
        return {"algorithm": "ancestral", "steps": None, "grid": {}, "variance": VARIANCES[variance]}
    return {"algorithm": "ddim", "steps": DDIM_STEPS, "grid": {"spacing": spacing}, "eta": 0.0}


def unet_shape(unet: dict) -> tuple[int, int, int]:
    """(C, H, W) that a ``UNet2DModel`` config takes."""
    size = unet.get("sample_size", 32)
    height, width = (size, size) if isinstance(size, int) else size
    return int(unet.get("in_channels", 3)), int(height), int(width)


def first_stage_config(folder: Path, unet: dict, scale_factor: float | None) -> tuple[dict | None, list[int]]:
    """The first-stage config of an ``LDMPipeline`` folder (None for pixel pipelines) and the data shape."""
    channels, height, width = unet_shape(unet)
    present = [name for name in FIRST_STAGES if (folder / name / CONFIG_FILE).is_file()]
    if not present:
        return None, [channels, height, width]
    name = present[0]
    raw = _json(folder / name / CONFIG_FILE)
    kind = FIRST_STAGES[name]
    if scale_factor is None:  # see the module docstring
        scale_factor = 1.0 if kind == "vq" else float(raw.get("scaling_factor", 0.18215))
    f = downsampling_factor(kind, {k: v for k, v in raw.items() if k == "block_out_channels"})
    config = {"source": {"pretrained": str(folder), "subfolder": name}, "scale_factor": float(scale_factor),
              "scale_by_std": False, "sample_posterior": True}
    return config, [int(raw.get("out_channels", 3)), height * f, width * f]


def convert_pipeline(source: str, scale_factor: float | None = None, revision: str | None = None) -> DDPM:
    """The lit_diffusion model of a published pipeline (module docstring), weights loaded, in eval mode."""
    folder = pipeline_folder(source, revision)
    index = _json(folder / "model_index.json")
    kind = index.get("_class_name")
    if kind not in PIPELINES:
        raise UserError(f"{folder} holds a {kind}; convertible pipelines are {', '.join(PIPELINES)}")
    unet = _json(folder / "unet" / CONFIG_FILE)
    if unet.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise UserError(f"{folder}/unet is a {unet['_class_name']}; only UNet2DModel networks are converted")
    scheduler_path = folder / "scheduler" / SCHEDULER_FILE
    scheduler = _json(scheduler_path)
    prediction = scheduler.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise UserError(f"{scheduler_path}: prediction_type '{prediction}' is not one of {sorted(PREDICTIONS)}")
    first_stage, image_shape = first_stage_config(folder, unet, scale_factor)
    network = {"_target_": NETWORK_TARGET, "_convert_": "all",
               "config": {k: v for k, v in unet.items() if not k.startswith("_")}}
    model = DDPM(network=network, process=process_config(scheduler, scheduler_path),
                 optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4},
                 sampler=sampler_config(scheduler, scheduler_path), image_shape=image_shape,
                 first_stage=first_stage, prediction=PREDICTIONS[prediction],
                 clip_denoised=bool(scheduler.get("clip_sample", True)))
    if tuple(model.sample_shape) != unet_shape(unet):
        raise UserError(f"{folder}: the first stage's latents have shape {tuple(model.sample_shape)}, but the UNet "
                        f"takes {unet_shape(unet)}; the pipeline's parts do not belong together")
    weights = next((folder / "unet" / f for f in WEIGHT_FILES if (folder / "unet" / f).is_file()), None)
    if weights is None:
        raise UserError(f"{folder}/unet has no weights file ({' or '.join(WEIGHT_FILES)})")
    try:
        model.network.unet.load_state_dict(read_state_file(weights, "UNet weights"))
    except RuntimeError as err:
        raise UserError(f"{weights} does not fit the UNet of {folder}/unet/{CONFIG_FILE}: "
                        f"{str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}") from None
    model.run_config = {"name": Path(source.removeprefix("diffusers:")).name or source, "conversion": {
        "source": source, "pipeline": kind, "folder": str(folder), "diffusers": diffusers.__version__,
        "unet_sha256": sha256_files([folder / "unet" / CONFIG_FILE, weights]),
        "scale_factor": None if first_stage is None else first_stage["scale_factor"]}}
    return model.eval()


def save_model(model: DDPM, out: str | Path) -> Path:
    """Write ``model`` as a lit_diffusion checkpoint (atomically: temporary file + rename)."""
    out = Path(out)
    if out.suffix != ".ckpt":
        raise UserError(f"out={out}: name the checkpoint file, ending in .ckpt (e.g. out=ldm_celebahq.ckpt)")
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint: dict[str, Any] = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)
    AtomicCheckpointIO().save_checkpoint(checkpoint, out)
    return out


def parameter_count(model: DDPM) -> int:
    return sum(p.numel() for p in model.network.parameters())
