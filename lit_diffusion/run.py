"""Training entry point (and the main job): ``python -m lit_diffusion.run [experiment=NAME] [key=value ...]``.

Builds the DataModule, model, callbacks, loggers and Trainer from the Hydra config and fits; with
``ckpt_path=PATH`` it resumes exactly where the checkpoint left off (``ckpt_path=auto``: from the run folder's
``last.ckpt`` when there is one).
"""

from __future__ import annotations

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig

from lit_diffusion.callbacks import Evaluation, SampleGrid
from lit_diffusion.checkpoint import load_checkpoint
from lit_diffusion.cli import entry_point
from lit_diffusion.config import (Range, check_ranges, config_errors, positive, positive_int, safe_instantiate,
                                  to_plain, trusted_class)
from lit_diffusion.loggers import build_loggers
from lit_diffusion.models.base import DiffusionModule
from lit_diffusion.resume import resolve_ckpt_path
from lit_diffusion.sampling import sigma_grid
from lit_diffusion.sweeps import objective_value


def build_model(cfg: DictConfig) -> DiffusionModule:
    """The LightningModule of ``cfg.model``, built from plain (checkpoint-safe) arguments."""
    kwargs = to_plain(cfg.model)
    cls = trusted_class(kwargs.pop("_target_"))
    return cls(**kwargs, run_config=to_plain(cfg))


RANGES = [Range("seed", int, lambda v: 0 <= v < 2**32, "in [0, 2^32)"), positive_int("data.batch_size"),
          Range("data.num_workers", int, lambda v: v >= 0, "0 or more"),
          Range("trainer.max_steps", int, lambda v: v >= 1 or v == -1, "positive (or -1: trainer.max_epochs decides)"),
          positive_int("trainer.accumulate_grad_batches"), positive("model.optimizer.lr")]
"""Values that would otherwise fail deep inside Lightning or torch."""


def train(cfg: DictConfig) -> dict:
    """Fit the configured model; returns the final metrics (with the last in-training evaluation's ``eval/*``)
    and the paths of the last checkpoint and grid."""
    to_plain(cfg)  # every value the user must still give, named in one message before anything starts
    check_ranges(cfg, RANGES)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt_path = resolve_ckpt_path(cfg)  # ckpt_path=auto: the run folder's last.ckpt if there is one
    if ckpt_path is not None:
        load_checkpoint(ckpt_path)  # a clear error before anything is built
    with config_errors("data"):
        datamodule = safe_instantiate(cfg.data)
    with config_errors("model"):
        model = build_model(cfg)
    if "sampler" in model.hparams:  # the grids' sampler: a bad sampler.steps fails now, not at the first grid
        sigma_grid(model.process, model.hparams.sampler.get("steps"), model.hparams.sampler.get("grid"))
    loggers = build_loggers(cfg)
    with config_errors("callbacks"):
        callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if not loggers:  # logger=none: the learning-rate monitor has nowhere to write
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    with config_errors("trainer"):
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
