"""Memory over a long run: resident set size (RSS) of a training process at step 1,000 and at the last step.

Trains the main job's stack (DDPM module, EMA callback, CSV logger, periodic checkpoints, sample grids, progress
bar, in-process ``lit_diffusion.run.train``) on a tiny UNet for ``--steps`` steps and reads the process's VmRSS
from ``/proc/self/status`` every ``--every`` steps, after a ``gc.collect``.  A leak (tensors kept by a logger,
a growing history, a callback holding batches) shows as growth between step 1,000 — after the allocator and
caches have warmed up — and the end; the goal is ≤ 5 % growth.  Writes ``<out>.csv`` (step, RSS MiB) and prints
the ratio:

    python benchmarks/memory_flat.py [--steps 10000] [--every 500] [--out benchmarks/results/memory_flat]
"""

from __future__ import annotations

import argparse
import csv
import gc
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from lightning.pytorch.callbacks import Callback

from lit_diffusion.run import train


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


class RSSRecorder(Callback):
    """RSS (MiB) every ``every`` steps, appended to ``path`` as CSV rows."""

    def __init__(self, path: str, every: int):
        self.path, self.every = Path(path), every
        self.path.write_text("step,rss_mib\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0:
            gc.collect()
            with self.path.open("a") as file:
                file.write(f"{step},{rss_mib():.1f}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory_flat"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = args.out.with_suffix(".csv").absolute()
    with tempfile.TemporaryDirectory() as run_dir, initialize_config_module("lit_diffusion.configs",
                                                                            version_base="1.3"):
        cfg = compose("config", overrides=[
            "network.base_channels=8", "network.channel_mult=[1,2]", "network.num_res_blocks=1",
            "network.attention_resolutions=[14]", "data.batch_size=8", f"trainer.max_steps={args.steps}",
            "trainer.val_check_interval=1000", "+trainer.limit_val_batches=2", "logger=csv",
            "callbacks.model_checkpoint.every_n_train_steps=1000", "callbacks.sample_grid.every_n_steps=1000",
            "callbacks.sample_grid.num_samples=4", "sampler.steps=3", "callbacks.evaluation=null",
            f"paths.output_dir={run_dir}",
            f"+callbacks.rss={{_target_: memory_flat.RSSRecorder, path: '{table}', every: {args.every}}}"])
        train(cfg)
    rows = {int(r["step"]): float(r["rss_mib"]) for r in csv.DictReader(table.open())}
    first, last = rows[min(s for s in rows if s >= 1000)], rows[max(rows)]
    print(f"RSS at step {min(s for s in rows if s >= 1000)}: {first:.1f} MiB; at step {max(rows)}: {last:.1f} MiB; "
          f"ratio {last / first:.3f} (goal ≤ 1.05)")


if __name__ == "__main__":
    main()
