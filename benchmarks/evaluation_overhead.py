"""Cost of the in-training Evaluation callback relative to training, at ddpm_mnist's settings.

Runs the callback's own ``evaluate`` (EMA-free here: the trained checkpoint's EMA weights are loaded as the
model) on the default MNIST model, with the callback settings of ``experiment=ddpm_mnist``:

    python benchmarks/evaluation_overhead.py --ckpt /path/to/ddpm_mnist.ckpt [--train-seconds 759] [--threads 2]

It measures the one-time reference computation (cached afterwards, per machine) and the median cost of one
evaluation, and prints overhead = evaluations × cost / training wall time (default 759 s: README's measured
1,200-step main job), with and without the one-time reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from types import SimpleNamespace

import torch
from hydra import compose, initialize_config_module

from lit_diffusion.callbacks import Evaluation
from lit_diffusion.checkpoint import model_from_checkpoint
from lit_diffusion.config import to_plain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--train-seconds", type=float, default=759.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fresh-cache", action="store_true", help="time the reference in an empty cache")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.fresh_cache:
        os.environ["LIT_DIFFUSION_CACHE"] = tempfile.mkdtemp()
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", ["experiment=ddpm_mnist", "hydra.runtime.output_dir=/tmp"], return_hydra_config=True)
    settings = {k: v for k, v in to_plain(cfg.callbacks.evaluation).items() if k != "_target_"}
    max_steps = cfg.trainer.max_steps
    callback = Evaluation(**settings)
    model = model_from_checkpoint(args.ckpt, "ema", "cpu")
    trainer = SimpleNamespace(loggers=[], callbacks=[], global_step=0, save_checkpoint=None)
    start = time.perf_counter()
    callback._prepare(model)
    reference = time.perf_counter() - start
    costs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        logged = callback.evaluate(trainer, model)
        costs.append(time.perf_counter() - start)
    cost = statistics.median(costs)
    evaluations = max_steps // settings["every_n_steps"] if settings["every_n_steps"] else 0
    print(f"protocol: experiment=ddpm_mnist callback settings {settings}; {max_steps} steps, training wall "
          f"{args.train_seconds:.0f} s; CPU, {args.threads} threads")
    print(f"one evaluation: {cost:.1f} s (runs {', '.join(f'{c:.1f}' for c in costs)}); values {logged}")
    print(f"reference features ({'computed' if not callback._reference.cached else 'from cache'}): {reference:.1f} s")
    print(f"overhead: {evaluations} evaluations = {evaluations * cost:.1f} s = "
          f"{100 * evaluations * cost / args.train_seconds:.2f}% of training (cached reference); "
          f"first run on a fresh cache + {callback.reference_seconds:.1f} s = "
          f"{100 * (evaluations * cost + callback.reference_seconds) / args.train_seconds:.2f}%")


if __name__ == "__main__":
    main()
