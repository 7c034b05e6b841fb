"""First-stage training step: lit_diffusion's Autoencoder (Lightning manual optimization, two optimizers) vs a
hand-written PyTorch loop with the same losses, measured in the same process.

Both train ``ae_kl_mnist``'s KL-f4 autoencoder and PatchGAN (identical initial weights, same batches) with the
discriminator active from step 0: L1 reconstruction over a learned log-variance + kl_weight · KL + adaptive
weight · (−D(x̂)) for the autoencoder, hinge loss for the discriminator, Adam for both, and the EMA update of the
autoencoder.  lit_diffusion runs the experiment's Lightning stack (Trainer, EMA callback, CSV logger, progress
bar; checkpoints, grids and validation off).  Rounds alternate; medians are compared:

    python benchmarks/autoencoder_step.py [--steps 30] [--rounds 3] [--batch-size 16] [--threads 2]
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
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from train_step import StepTimer

from lit_diffusion.callbacks import EMA
from lit_diffusion.run import build_model


def framework_step_times(cfg, state, datamodule, steps: int, warmup: int) -> list[float]:
    model = build_model(cfg)
    model.load_state_dict(state)
    timer = StepTimer()
    ema = EMA(**{k: v for k, v in cfg.callbacks.ema.items() if k != "_target_"})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(max_steps=warmup + steps, accelerator="cpu", devices=1, callbacks=[ema, timer, RichProgressBar()],
                            logger=CSVLogger(tmp), enable_checkpointing=False, limit_val_batches=0,
                            num_sanity_val_steps=0, log_every_n_steps=cfg.trainer.log_every_n_steps,
                            enable_model_summary=False)
        trainer.fit(model, datamodule=datamodule)
    stamps = timer.stamps[warmup:]
    return [b - a for a, b in zip(stamps, stamps[1:])]


def raw_step_times(cfg, state, datamodule, steps: int, warmup: int) -> list[float]:
    model = build_model(cfg)
    model.load_state_dict(state)
    ae, disc, logvar = model.autoencoder, model.loss.discriminator, model.loss.logvar
    ema = copy.deepcopy(ae).requires_grad_(False)
    opt_ae = torch.optim.Adam([*ae.parameters(), logvar], lr=cfg.model.optimizer.lr, betas=tuple(cfg.model.optimizer.betas))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.model.optimizer.lr, betas=tuple(cfg.model.optimizer.betas))
    kl_weight, disc_weight, decay = cfg.model.loss.kl_weight, cfg.model.loss.disc_weight, cfg.callbacks.ema.decay
    last = ae.decoder.conv_out.weight
    stamps, step = [], 0
    loader = datamodule.train_dataloader()
    while step < warmup + steps + 1:
        for batch in loader:
            x = batch["image"]
            posterior = ae.encode(x).latent_dist
            rec = ae.decode(posterior.sample()).sample
            nll = ((x - rec).abs() / torch.exp(logvar) + logvar).sum() / x.shape[0]
            kl = posterior.kl().sum() / x.shape[0]
            disc.requires_grad_(False)
            g_loss = -disc(rec).mean()
            rec_grad = torch.autograd.grad(nll, last, retain_graph=True)[0]
            g_grad = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
            weight = (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, 1e4).detach() * disc_weight
            loss = nll + kl_weight * kl + weight * g_loss
            opt_ae.zero_grad(set_to_none=True)
            loss.backward()
            opt_ae.step()
            disc.requires_grad_(True)
            d_loss = 0.5 * (F.relu(1 - disc(x)).mean() + F.relu(1 + disc(rec.detach())).mean())
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            with torch.no_grad():
                w = 1 - min(decay, (1 + step) / (10 + step))
                torch._foreach_lerp_(list(ema.parameters()), list(ae.parameters()), w)
            loss.item(), d_loss.item()  # the framework logs both every step
            stamps.append(time.perf_counter())
            step += 1
            if step >= warmup + steps + 1:
                break
    stamps = stamps[warmup:]
    return [b - a for a, b in zip(stamps, stamps[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=ae_kl_mnist", f"data.batch_size={args.batch_size}",
                                           "model.loss.disc_start=0", "paths.output_dir=/tmp/lit_diffusion_bench"])
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    L.seed_everything(0, verbose=False)
    state = copy.deepcopy(build_model(cfg).state_dict())
    raw, framework = [], []
    for _ in range(args.rounds):
        raw += raw_step_times(cfg, state, datamodule, args.steps, args.warmup)
        framework += framework_step_times(cfg, state, datamodule, args.steps, args.warmup)
    raw_median, fw_median = statistics.median(raw), statistics.median(framework)
    print(f"\nae_kl_mnist (discriminator active), batch={args.batch_size}, threads={args.threads}, {args.rounds} rounds × "
          f"{args.steps} steps (after {args.warmup} warm-up)")
    print(f"raw PyTorch loop : median step {raw_median * 1e3:.1f} ms")
    print(f"lit_diffusion    : median step {fw_median * 1e3:.1f} ms")
    print(f"ratio lit_diffusion / raw = {fw_median / raw_median:.3f}")


if __name__ == "__main__":
    main()
