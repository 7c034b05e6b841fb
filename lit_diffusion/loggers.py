"""The run's loggers from ``cfg.logger`` (csv, tensorboard, wandb — any Lightning logger).

A W&B run gets a dashboard that identifies it: the whole run config flattened to dotted keys
(``model.optimizer.lr``), the experiment name and the git commit of the code (with ``-dirty`` when the work tree
has changes), grouped by experiment — and, in a Hydra multirun (sweeps), by experiment and sweep folder, with the
job number as its job type.  Without an account or network it logs offline (``wandb sync`` uploads later).
What the run logs into it: train/val loss, learning rate, ``eval/*`` curves (Evaluation callback), sample grids
as images (SampleGrid), checkpoints as artifacts with ``logger.wandb.log_model``, and W&B's own system metrics.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lit_diffusion.config import to_plain
from lit_diffusion.provenance import git_commit


def wandb_reachable(timeout: float = 2.0) -> bool:
    try:
        socket.create_connection(("api.wandb.ai", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict of dotted keys (lists stay values)."""
    if not isinstance(config, dict):
        return {prefix: config}
    flat = {}
    for key, value in config.items():
        flat |= flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return flat


def wandb_settings(cfg: DictConfig, logger_cfg: dict) -> dict:
    """The W&B logger's config with the run's dashboard identity (module docstring) added."""
    config = flatten(to_plain(cfg)) | {"experiment": cfg.get("name"), "git_commit": git_commit()}
    extra: dict[str, Any] = {"config": config}
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        hydra_cfg = HydraConfig.get()
        extra |= {"group": f"{logger_cfg.get('group') or cfg.get('name')}/{Path(hydra_cfg.sweep.dir).name}",
                  "job_type": f"job{hydra_cfg.job.num}"}
    if not logger_cfg.get("offline"):
        has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file()
        if not (has_key and wandb_reachable()):
            print("W&B: no account or no network found; logging offline (upload later with `wandb sync`).")
            extra["offline"] = True
    return {**logger_cfg, **extra}


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for logger_cfg in (cfg.get("logger") or {}).values():
        if logger_cfg is None:
            continue
        logger_cfg = to_plain(logger_cfg)
        if logger_cfg.get("_target_", "").endswith("WandbLogger"):
            logger_cfg = wandb_settings(cfg, logger_cfg)
        loggers.append(hydra.utils.instantiate(logger_cfg, _convert_="all"))
    return loggers
