"""Run the real entry points (``python -m lit_diffusion.run`` / ``.sample``) on a tiny network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_module

from lit_diffusion.run import train

# A ≈ 20k-parameter UNet, 4 steps of batch 8, a grid of 4 images with 3 DDIM steps, every 2 steps.
TINY = [
    "network.base_channels=8",
    "network.channel_mult=[1,2]",
    "network.num_res_blocks=1",
    "network.attention_resolutions=[14]",
    "data.batch_size=8",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "+trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "callbacks.sample_grid.every_n_steps=2",
    "callbacks.sample_grid.num_samples=4",
    "sampler.steps=3",
]


def run_cli(module: str, *overrides: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", ""), "HYDRA_FULL_ERROR": "0"}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run([sys.executable, "-m", module, *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(overrides)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def train_tiny(run_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli("lit_diffusion.run", *TINY, f"hydra.run.dir={run_dir}", *overrides, cwd=run_dir.parent, check=check)


def train_in_process(output_dir: Path, *overrides: str) -> Path:
    """Train with ``lit_diffusion.run``'s config and function in this process (no interpreter start-up), with no
    progress bar, logger or sample grids; returns the last checkpoint."""
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "+trainer.enable_progress_bar=false", "~callbacks.progress_bar",
                                           "logger=none", "callbacks.sample_grid=null", f"paths.output_dir={output_dir}"])
    return Path(train(cfg)["checkpoint"])
