"""Hyper-parameter sweeps over training runs: the objective a Hydra sweeper optimises and the best trial.

    python -m lit_diffusion.run -m experiment=sweep_ddpm_mnist      # Optuna (hydra-optuna-sweeper): lr, EMA decay, target
    python -m lit_diffusion.run -m objective=eval/kid model.optimizer.lr=5e-4,1e-3   # any multirun with an objective

With ``objective=NAME`` a run's task function returns ``metrics[NAME]`` of :func:`lit_diffusion.run.train` (e.g.
``eval/kid``, the in-training KID of the last evaluation), which is what Hydra's sweepers read.  In the sweep
folder, Optuna's sweeper writes ``optimization_results.yaml`` (best searched parameters and value), and
:class:`BestTrial` writes ``best_trial.yaml``: the objective, value, folder and complete override list of the
best job (its checkpoints are in that folder), after every job wrote its own ``objective.yaml``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lit_diffusion.errors import UserError
from lit_diffusion.files import atomic_write_text

TRIAL_FILE = "objective.yaml"
BEST_FILE = "best_trial.yaml"


def objective_value(metrics: dict[str, float], name: str | None) -> float | None:
    """``metrics[name]`` as a float (None without an objective); a clear error when the run did not measure it."""
    if name is None:
        return None
    if name not in metrics:
        raise UserError(f"objective={name} was not measured by this run (it logged {', '.join(sorted(metrics))}); "
                        "in-training metrics (eval/kid, eval/fid) need callbacks.evaluation.every_n_steps to be at "
                        "most trainer.max_steps (a divisor of it, for the final step's value)")
    return float(metrics[name])


def minimizes(config: DictConfig) -> bool:
    """Whether the sweep minimises its objective (Optuna's ``hydra.sweeper.direction``; other sweepers: yes)."""
    direction = OmegaConf.select(config, "hydra.sweeper.direction", default="minimize")
    return str(getattr(direction, "name", direction)).lower() != "maximize"


class BestTrial(Callback):
    """Hydra callback of the training config: each multirun job records its objective, the sweep its best job."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or job_return.status != JobStatus.COMPLETED \
                or job_return.return_value is None:
            return
        folder = Path(config.hydra.runtime.output_dir)
        trial = {"objective": config.get("objective"), "value": float(job_return.return_value), "folder": str(folder),
                 "overrides": list(job_return.overrides)}
        atomic_write_text(folder / TRIAL_FILE, OmegaConf.to_yaml(trial))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        trials = [OmegaConf.to_container(OmegaConf.load(path)) for path in sorted(sweep_dir.rglob(TRIAL_FILE))]
        trials = [t for t in trials if not math.isnan(t["value"])]
        if not trials:
            return
        sign = 1.0 if minimizes(config) else -1.0
        best = min(trials, key=lambda t: sign * t["value"])
        atomic_write_text(sweep_dir / BEST_FILE, OmegaConf.to_yaml({**best, "trials": len(trials)}))
        print(f"best of {len(trials)} trials: {best['objective']}={best['value']:.6g} in {best['folder']}\n"
              f"  overrides: {' '.join(best['overrides'])}\n  written to {sweep_dir / BEST_FILE}")
