"""Cost of the in-training Evaluation callback relative to training, at ddpm_mnist's settings.

Runs the callback's own ``evaluate`` (EMA-free here: the trained checkpoint's EMA weights are loaded as the
model) on the default MNIST model, with the callback settings of ``experiment=ddpm_mnist``:

    python benchmarks/evaluation_overhead.py --ckpt /path/to/ddpm_mnist.ckpt [--train-seconds S] [--threads 2]

It measures the one-time reference computation (cached afterwards, per machine), the median cost of one
evaluation and, in the same process (so that a busy machine slows both alike), the time of a training step
(forward, backward, Adam on a batch of 64 digits; a raw loop, without Lightning's ≈ 6.5% — README), and
prints overhead = evaluations × cost / (max_steps × step time), with and without the one-time reference.
``--train-seconds`` replaces the measured training time (e.g. 759 s, README's idle-machine main job).
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


def step_seconds(model, batch_size: int, steps: int = 8) -> float:
    """Median wall time of a raw training step of ``model`` on a batch of real digits."""
    from lit_diffusion.metrics.images import dataset_split

    dataset = dataset_split(model.run_config["data"], "train")
    batch = torch.stack([dataset[i]["image"] for i in range(batch_size)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    model.eval()
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--train-seconds", type=float, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extractor", default="inception", help="random_conv: check the script in seconds")
    parser.add_argument("--fresh-cache", action="store_true", help="time the reference in an empty cache")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.fresh_cache:
        os.environ["LIT_DIFFUSION_CACHE"] = tempfile.mkdtemp()
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", ["experiment=ddpm_mnist"])
    settings = {k: v for k, v in to_plain(cfg.callbacks.evaluation).items() if k != "_target_"}
    settings["extractor"] = args.extractor
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
    train_seconds = args.train_seconds or max_steps * step_seconds(model, cfg.data.batch_size)
    evaluations = max_steps // settings["every_n_steps"] if settings["every_n_steps"] else 0
    print(f"protocol: experiment=ddpm_mnist callback settings {settings}; {max_steps} steps, training wall "
          f"{train_seconds:.0f} s; CPU, {args.threads} threads")
    print(f"one evaluation: {cost:.1f} s (runs {', '.join(f'{c:.1f}' for c in costs)}); values {logged}")
    print(f"reference features ({'computed' if not callback._reference.cached else 'from cache'}): {reference:.1f} s")
    print(f"overhead: {evaluations} evaluations = {evaluations * cost:.1f} s = "
          f"{100 * evaluations * cost / train_seconds:.2f}% of training (cached reference); "
          f"first run on a fresh cache + {callback.reference_seconds:.1f} s = "
          f"{100 * (evaluations * cost + callback.reference_seconds) / train_seconds:.2f}%")


if __name__ == "__main__":
    main()
