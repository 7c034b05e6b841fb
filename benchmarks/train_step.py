"""Training-step overhead: lit_diffusion vs a hand-written PyTorch loop, measured in the same process.

Both sides train the same network (identical initial weights) on the same batches from the same
DataModule with the same objective, optimizer, gradient clipping and EMA update.  lit_diffusion runs the
default experiment's Lightning stack (Trainer, DDPM module, EMA callback, CSV logger, rich progress bar);
periodic checkpoints, grids and validation are off because they are not per-step costs.  The two are
alternated in rounds and the median step time of each is compared:

    python benchmarks/train_step.py [--steps 60] [--rounds 3] [--batch-size 64] [--threads 2]

Prints the ratio framework / raw (goal ≤ 1.03 at the default model size, issue 15).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_module
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.loggers import CSVLogger

from lit_diffusion.callbacks import EMA
from lit_diffusion.config import safe_instantiate
from lit_diffusion.run import build_model


class StepTimer(Callback):
    def __init__(self):
        self.stamps: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.stamps.append(time.perf_counter())


def framework_step_times(cfg, network_state, datamodule, steps: int, warmup: int) -> list[float]:
    model = build_model(cfg)
    model.network.load_state_dict(network_state)
    timer = StepTimer()
    ema = EMA(**{k: v for k, v in cfg.callbacks.ema.items() if k != "_target_"})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            max_steps=warmup + steps, accelerator="cpu", devices=1, precision=cfg.trainer.precision,
            gradient_clip_val=cfg.trainer.gradient_clip_val, callbacks=[ema, timer, RichProgressBar()],
            logger=CSVLogger(tmp), enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
            log_every_n_steps=cfg.trainer.log_every_n_steps, enable_model_summary=False,
        )
        trainer.fit(model, datamodule=datamodule)
    stamps = timer.stamps[warmup:]
    return [b - a for a, b in zip(stamps, stamps[1:])]


def raw_step_times(cfg, network_state, datamodule, steps: int, warmup: int) -> list[float]:
    model = build_model(cfg)  # same network and process; the loop below is plain PyTorch
    network, process = model.network, model.process
    network.load_state_dict(network_state)
    ema = copy.deepcopy(network).requires_grad_(False)
    optimizer = safe_instantiate(cfg.model.optimizer)(network.parameters())
    warm = cfg.model.lr_warmup_steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    clip, decay = cfg.trainer.gradient_clip_val, cfg.callbacks.ema.decay
    stamps, step = [], 0
    loader = datamodule.train_dataloader()
    while step < warmup + steps + 1:
        for batch in loader:
            x0 = batch["image"]
            t = torch.randint(0, process.num_timesteps, (x0.shape[0],))
            eps = torch.randn_like(x0)
            a_bar = process.alphas_cumprod[t].float()[:, None, None, None]
            xt = a_bar.sqrt() * x0 + (1 - a_bar).sqrt() * eps
            loss = torch.mean((network(xt, t.float()) - eps) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), clip)
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                weight = 1 - min(decay, (1 + step) / (10 + step))
                torch._foreach_lerp_(list(ema.parameters()), list(network.parameters()), weight)
            loss.item()  # the framework logs the loss every step
            stamps.append(time.perf_counter())
            step += 1
            if step >= warmup + steps + 1:
                break
    stamps = stamps[warmup:]
    return [b - a for a, b in zip(stamps, stamps[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="ddpm_mnist")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. network.base_channels=32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={args.experiment}", f"data.batch_size={args.batch_size}",
                                           "paths.output_dir=/tmp/lit_diffusion_bench", *args.overrides])
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    L.seed_everything(0, verbose=False)
    network_state = copy.deepcopy(build_model(cfg).network.state_dict())
    raw, framework = [], []
    for _ in range(args.rounds):
        raw += raw_step_times(cfg, network_state, datamodule, args.steps, args.warmup)
        framework += framework_step_times(cfg, network_state, datamodule, args.steps, args.warmup)
    raw_median, fw_median = statistics.median(raw), statistics.median(framework)
    params = sum(p.numel() for p in build_model(cfg).network.parameters())
    print(f"\nexperiment={args.experiment}  network params={params / 1e6:.2f}M  batch={args.batch_size}  "
          f"threads={args.threads}  {args.rounds} rounds × {args.steps} steps (after {args.warmup} warm-up)")
    print(f"raw PyTorch loop : median step {raw_median * 1e3:.1f} ms  ({args.batch_size / raw_median:.0f} img/s)")
    print(f"lit_diffusion    : median step {fw_median * 1e3:.1f} ms  ({args.batch_size / fw_median:.0f} img/s)")
    print(f"ratio lit_diffusion / raw = {fw_median / raw_median:.3f}  (goal ≤ 1.03)")


if __name__ == "__main__":
    main()
