"""Sweeps: Optuna through Hydra with the in-training KID as objective, and the W&B sweep template."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from cli import TINY, run_cli
from lit_diffusion.errors import UserError
from lit_diffusion.sweeps import BEST_FILE, TRIAL_FILE, objective_value

# Two steps, then one evaluation of 4 EMA samples (2 DDIM steps) against 16 validation digits, cheap features.
TINY_EVALUATION = ["trainer.max_steps=2", "callbacks.evaluation.extractor=random_conv",
                   "callbacks.evaluation.num_samples=4", "callbacks.evaluation.ref_n=16",
                   "callbacks.evaluation.batch_size=4", "callbacks.evaluation.sampler={steps: 2}"]


def test_objective_value_names_what_the_run_measured():
    assert objective_value({"eval/kid": 0.5}, "eval/kid") == 0.5
    assert objective_value({"eval/kid": 0.5}, None) is None
    with pytest.raises(UserError, match="eval/fid was not measured.*eval/kid.*every_n_steps"):
        objective_value({"eval/kid": 0.5}, "eval/fid")


@pytest.mark.slow
def test_optuna_sweep_returns_kid_and_writes_the_best_trial(tmp_path, monkeypatch):
    """``-m experiment=sweep_ddpm_mnist``: 2 trials of 2 steps; each returns its final in-training KID to Optuna."""
    sweep = tmp_path / "sweep"
    monkeypatch.setenv("LIT_DIFFUSION_CACHE", str(tmp_path / "cache"))
    proc = run_cli("lit_diffusion.run", "-m", "experiment=sweep_ddpm_mnist", *TINY, *TINY_EVALUATION,
                   "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}", "logger=none", cwd=tmp_path)
    trials = [OmegaConf.load(sweep / job / TRIAL_FILE) for job in ("0", "1")]
    searched = {"model.optimizer.lr", "callbacks.ema.decay", "model.prediction"}
    for trial in trials:
        assert trial.objective == "eval/kid" and trial.value == trial.value  # a number, not NaN
        assert searched <= {o.split("=")[0] for o in trial.overrides}
        assert (sweep / trial.folder.rsplit("/", 1)[-1] / "checkpoints" / "last.ckpt").is_file()
    optuna = OmegaConf.load(sweep / "optimization_results.yaml")
    best = OmegaConf.load(sweep / BEST_FILE)
    assert best.value == optuna.best_value == min(t.value for t in trials)
    assert set(optuna.best_params) == searched
    assert {f"{k}={v}" for k, v in optuna.best_params.items()} <= set(best.overrides)
    assert "experiment=sweep_ddpm_mnist" in best.overrides and best.trials == 2
    assert f"best of 2 trials: eval/kid={best.value:.6g}" in proc.stdout


def test_wandb_sweep_template_gives_valid_overrides():
    """Every value the W&B agent can put on the command line (bounds and choices, formatted by wandb's own
    ``args_no_hyphens`` code) composes into the training config, at the key the sweep names."""
    from hydra import compose, initialize_config_module
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    template = yaml.safe_load((Path(__file__).parents[1] / "experiments" / "sweeps" / "ddpm_mnist.yaml").read_text())
    command = template["command"]
    assert command[command.index("-m") + 1] == "lit_diffusion.run" and command[-1] == "${args_no_hyphens}"
    fixed = command[command.index("-m") + 2:-1]
    parameters = template["parameters"]
    choices = {name: spec.get("values") or [spec["min"], spec["max"]] for name, spec in parameters.items()}
    assert set(choices) == {"model.optimizer.lr", "callbacks.ema.decay", "model.prediction"}
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        metric = compose("config", overrides=[*fixed, "paths.output_dir=/tmp/unused"])
        assert metric.objective == template["metric"]["name"] and template["metric"]["goal"] == "minimize"
        for i in range(max(len(v) for v in choices.values())):
            picked = {name: values[i % len(values)] for name, values in choices.items()}
            args = create_sweep_command_args({"args": {k: {"value": v} for k, v in picked.items()}})["args_no_hyphens"]
            cfg = compose("config", overrides=[*fixed, *args, "paths.output_dir=/tmp/unused"])
            for name, value in picked.items():
                assert OmegaConf.select(cfg, name, throw_on_missing=True) == value


def test_slurm_launcher_config_gives_one_task_per_device():
    from hydra import compose, initialize_config_module

    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                                           "paths.output_dir=/tmp/unused"], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher") and launcher["name"] == "ddpm_mnist"
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    assert launcher["max_num_timeout"] > 0  # time-outs are requeued too: ckpt_path=auto resumes them


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_job_and_reports_its_objective(tmp_path):
    """The submitit launcher (local executor: the job in its own process, as on a SLURM node) trains with
    ckpt_path=auto in the fixed sweep folder and returns the objective to the sweep's process."""
    sweep = tmp_path / "sweep"
    proc = run_cli("lit_diffusion.run", "-m", "hydra/launcher=submitit_local", *TINY, "trainer.max_steps=2",
                   "callbacks.sample_grid.every_n_steps=0", "logger=none", "ckpt_path=auto", "objective=val/loss",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert (sweep / "0" / "checkpoints" / "last.ckpt").is_file()
    assert list((sweep / ".submitit").rglob("*_result.pkl"))  # it ran under submitit
    best = OmegaConf.load(sweep / BEST_FILE)
    assert best.objective == "val/loss" and best.value > 0 and "ckpt_path=auto" in best.overrides
    assert "best of 1 trials" in proc.stdout
