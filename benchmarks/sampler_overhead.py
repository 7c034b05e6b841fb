"""Sampler overhead per network evaluation: time per NFE of each sampler versus a bare network forward.

All samplers run the same untrained default UNet (experiment ddpm_mnist's network; DDPM's process, whose
SDE limit serves the SDE/ODE samplers) on the same batch, so the ratio isolates the sampler's own work
(σ-grid bookkeeping, denoiser preconditioning, solver arithmetic, SciPy transfers for the ODE):

    python benchmarks/sampler_overhead.py [--batch-size 64] [--threads 2]

Prints, per sampler, NFE, time per NFE and the ratio to one bare forward (1.00 = no overhead).
"""

from __future__ import annotations

import argparse
import time

import torch
from hydra import compose, initialize_config_module

from lit_diffusion.run import build_model

SAMPLERS = {
    "ancestral": {"algorithm": "ancestral", "steps": 50},
    "ddim": {"algorithm": "ddim", "steps": 50},
    "langevin": {"algorithm": "langevin", "steps": 10, "steps_each": 5},
    "euler_maruyama": {"algorithm": "euler_maruyama", "steps": 50},
    "pc": {"algorithm": "pc", "steps": 25},
    "ode": {"algorithm": "ode", "steps": 2, "rtol": 1e-3, "atol": 1e-3},
}


@torch.no_grad()
def forward_time(model, batch: int, repeats: int) -> float:
    x = torch.randn(batch, *model.sample_shape)
    t = torch.full((batch,), 500.0)
    model.network(x, t)
    start = time.perf_counter()
    for _ in range(repeats):
        model.network(x, t)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=ddpm_mnist", "paths.output_dir=/tmp/unused"])
    model = build_model(cfg).eval()
    torch.nn.init.normal_(model.network.out[-1].weight, std=0.01)  # an untrained net outputs 0; avoid that
    bare = forward_time(model, args.batch_size, 20)
    print(f"bare network forward, batch {args.batch_size}: {bare * 1e3:.1f} ms")
    print(f"{'sampler':<16}{'NFE':>6}{'ms/NFE':>10}{'ratio':>8}")
    for name, sampler in SAMPLERS.items():
        start = time.perf_counter()
        result = model.sample(args.batch_size, sampler, seed=0)
        per_nfe = (time.perf_counter() - start) / result.nfe
        print(f"{name:<16}{result.nfe:>6}{per_nfe * 1e3:>10.1f}{per_nfe / bare:>8.3f}")


if __name__ == "__main__":
    main()
