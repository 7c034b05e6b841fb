"""Latent diffusion costs, as ratios measured in one process (rounds interleaved, medians compared):

* first-stage encode / decode throughput (images/s) of the ae_kl_mnist autoencoder (KL-f4, 32×32 → 8×8×3);
* a training step (forward, backward, Adam) of ``ldm_mnist`` on 32×32 images — encoding every batch, or with
  ``first_stage.cache_latents`` (encoded once before training) — against ``ddpm_mnist``'s pixel-space UNet on
  the same 32×32 images (attention at 8×8, the resolution of ddpm_mnist's 7×7 level at 28×28);
* sampling: 20 DDIM steps + decoding of the latent model vs 20 DDIM steps of the pixel model.

Weights are random (the autoencoder of ae_kl_mnist's config, saved with ``save_pretrained``): costs do not
depend on them.  ``--first-stage PATH`` uses a trained ae_kl_mnist checkpoint instead.

    python benchmarks/latent_diffusion.py [--rounds 3] [--steps 20] [--batch-size 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from lit_diffusion.autoencoders.networks import build_autoencoder, decode, encode
from lit_diffusion.run import build_model

AE_KL_MNIST = {"in_channels": 1, "out_channels": 1, "block_out_channels": [16, 32, 64], "layers_per_block": 1,
               "latent_channels": 3, "norm_num_groups": 8}


def compose_model(experiment: str, overrides: list[str]):
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}", "paths.output_dir=/tmp/lit_diffusion_bench",
                                           *overrides])
    torch.manual_seed(0)
    return build_model(cfg)


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step(model, optimizer, images):
    def step():
        torch.manual_seed(0)
        loss = model.batch_loss({"image": images}, train=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed repeats per measurement and round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--first-stage", default=None, help="an ae_kl_mnist checkpoint (default: random weights)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.first_stage:
            first_stage = [f"first_stage.source.ckpt={args.first_stage}"]
        else:
            torch.manual_seed(0)
            build_autoencoder("kl", AE_KL_MNIST).save_pretrained(Path(tmp) / "vae")
            first_stage = ["first_stage=pretrained", f"first_stage.source.pretrained={Path(tmp) / 'vae'}"]
        first_stage += ["first_stage.scale_factor=1.0", "first_stage.scale_by_std=false"]
        latent = compose_model("ldm_mnist", first_stage)
        cached = compose_model("ldm_mnist", [*first_stage, "first_stage.cache_latents=true"])
        pixel = compose_model("ddpm_mnist", ["data.image_size=32", "network.attention_resolutions=[8]"])
        images = torch.rand(args.batch_size, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
        cached.first_stage.module.fill_cache([{"image": x} for x in images])
        autoencoder = latent.first_stage.module.autoencoder
        latents = encode(autoencoder, images)
        ddim = {"algorithm": "ddim", "steps": 20, "eta": 0.0}
        measures = {
            "encode": lambda: encode(autoencoder, images),
            "decode": lambda: decode(autoencoder, latents),
            "train latent (encode each step)": train_step(latent, torch.optim.Adam(latent.network.parameters()), images),
            "train latent (cached latents)": train_step(cached, torch.optim.Adam(cached.network.parameters()), images),
            "train pixel": train_step(pixel, torch.optim.Adam(pixel.network.parameters()), images),
            "sample latent (20 DDIM + decode)": lambda: latent.sample(args.batch_size, ddim),
            "sample pixel (20 DDIM)": lambda: pixel.sample(args.batch_size, ddim),
        }
        results: dict[str, list[float]] = {name: [] for name in measures}
        for _ in range(args.rounds):
            for name, fn in measures.items():
                with torch.no_grad() if name.startswith(("encode", "decode", "sample")) else torch.enable_grad():
                    results[name].append(timed(fn, args.steps))
    median = {name: statistics.median(times) for name, times in results.items()}
    params = {name: sum(p.numel() for p in m.network.parameters()) / 1e6 for name, m in (("latent", latent), ("pixel", pixel))}
    print(f"\nbatch {args.batch_size} of 32×32 images, threads={args.threads}, {args.rounds} rounds × {args.steps} "
          f"repeats; UNet params latent {params['latent']:.2f}M (8×8×3), pixel {params['pixel']:.2f}M (32×32×1), "
          f"first stage {sum(p.numel() for p in autoencoder.parameters()) / 1e6:.2f}M\n")
    print("| measurement | median ms / batch | images/s |\n|---|---|---|")
    for name, seconds in median.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {args.batch_size / seconds:.0f} |")
    print(f"\nlatent / pixel training step: {median['train latent (encode each step)'] / median['train pixel']:.2f} "
          f"(cached: {median['train latent (cached latents)'] / median['train pixel']:.2f}); cache saves "
          f"{1 - median['train latent (cached latents)'] / median['train latent (encode each step)']:.0%} of a latent "
          f"step; latent / pixel sampling: {median['sample latent (20 DDIM + decode)'] / median['sample pixel (20 DDIM)']:.2f}")


if __name__ == "__main__":
    main()
