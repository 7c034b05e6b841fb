"""Training entry point (and the main job): ``python -m lit_diffusion.run [experiment=NAME] [key=value ...]``.

Builds the DataModule, model, callbacks, loggers and Trainer from the Hydra config and fits; with
``ckpt_path=PATH`` it resumes exactly where the checkpoint left off (``ckpt_path=auto``: from the run folder's
``last.ckpt`` when there is one).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig

from lit_diffusion.callbacks import Evaluation, SampleGrid
from lit_diffusion.checkpoint import load_checkpoint
from lit_diffusion.cli import entry_point
from lit_diffusion.config import safe_instantiate, to_plain, trusted_class
from lit_diffusion.models.base import DiffusionModule
from lit_diffusion.resume import resolve_ckpt_path
from lit_diffusion.sweeps import objective_value


def build_model(cfg: DictConfig) -> DiffusionModule:
    """The LightningModule of ``cfg.model``, built from plain (checkpoint-safe) arguments."""
    kwargs = to_plain(cfg.model)
    cls = trusted_class(kwargs.pop("_target_"))
    return cls(**kwargs, run_config=to_plain(cfg))


def _wandb_reachable(timeout: float = 2.0) -> bool:
    try:
        socket.create_connection(("api.wandb.ai", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if logger_cfg is None:
            continue
        if logger_cfg.get("_target_", "").endswith("WandbLogger") and not logger_cfg.get("offline"):
            has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file()
            if not (has_key and _wandb_reachable()):
                print("W&B: no account or no network found; logging offline (upload later with `wandb sync`).")
                logger_cfg = {**to_plain(logger_cfg), "offline": True}
        loggers.append(hydra.utils.instantiate(logger_cfg))
    return loggers


def train(cfg: DictConfig) -> dict:
    """Fit the configured model; returns the final metrics (with the last in-training evaluation's ``eval/*``)
    and the paths of the last checkpoint and grid."""
    to_plain(cfg)  # every value the user must still give, named in one message before anything starts
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt_path = resolve_ckpt_path(cfg)  # ckpt_path=auto: the run folder's last.ckpt if there is one
    if ckpt_path is not None:
        load_checkpoint(ckpt_path)  # a clear error before anything is built
    datamodule = safe_instantiate(cfg.data)
    model = build_model(cfg)
    loggers = build_loggers(cfg)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not loggers:  # logger=none: the learning-rate monitor has nowhere to write
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for evaluation in (c for c in callbacks if isinstance(c, Evaluation) and c.history):
        metrics |= {k: float(v) for k, v in evaluation.history[-1].items() if k != "step"}
    grid = next((c.last_path for c in callbacks if isinstance(c, SampleGrid)), None)
    checkpoint = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else None
    print(f"finished at step {trainer.global_step}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    print(f"last checkpoint: {checkpoint}\nlast sample grid: {grid}")
    return {"metrics": metrics, "checkpoint": checkpoint, "sample_grid": str(grid) if grid else None}


def fit(cfg: DictConfig) -> float | None:
    """The task function of ``python -m lit_diffusion.run``: train, and return the value of ``cfg.objective``
    (e.g. ``eval/kid``) for Hydra's sweepers, or None without an objective (:mod:`lit_diffusion.sweeps`)."""
    return objective_value(train(cfg)["metrics"], cfg.get("objective"))


main = entry_point("config")(fit)


if __name__ == "__main__":
    main()
