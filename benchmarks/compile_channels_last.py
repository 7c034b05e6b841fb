"""torch.compile and channels-last memory format, on and off: training-step and sampling-step time ratios.

The network of an experiment (default: the main job's 0.69M-parameter MNIST UNet) takes training steps (forward,
ε-loss, backward, Adam) and no-grad sampling forwards on random data, in four variants: eager, compiled
(``nn.Module.compile``, what ``model.compile=true`` does), channels-last, both.  Each variant starts from the same
weights; the first compiled call's time (compilation) is reported separately, then the median step time of
``--steps`` steps:

    python benchmarks/compile_channels_last.py [--experiment ddpm_mnist] [--batch-size 64] [--steps 30]
    python benchmarks/compile_channels_last.py --device cuda --precision bf16 --experiment ddpm_cifar10

Prints a table of median times and their ratios to eager (< 1: faster).  Compiling the small UNet takes minutes on
a 2-core CPU (inductor's C++ code generation), so this is not run by the tests.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from hydra import compose, initialize_config_module

from lit_diffusion.run import build_model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_times(network, batch, sigma, steps: int, train: bool, dtype) -> tuple[float, list[float]]:
    """Seconds of the first call (compilation, when compiled) and of the next ``steps`` calls."""
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    device = batch.device
    times = []
    for _ in range(steps + 1):
        synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if train:
                loss = (network(batch, sigma) - batch).square().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            else:
                with torch.no_grad():
                    network(batch, sigma)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times[0], times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="ddpm_mnist")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32", help="bf16: autocast (GPU)")
    parser.add_argument("--compile", choices=["both", "off"], default="both",
                        help="off: time the eager variants only (compiling takes minutes per variant on a CPU)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. network.base_channels=32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device, dtype = torch.device(args.device), (torch.bfloat16 if args.precision == "bf16" else None)
    with initialize_config_module("lit_diffusion.configs", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={args.experiment}", "paths.output_dir=/tmp/lit_diffusion_bench",
                                           *args.overrides])
    torch.manual_seed(0)
    model = build_model(cfg)  # an unconditional experiment: the network takes (x, σ) only
    reference = model.network.to(device)
    batch = torch.randn(args.batch_size, *model.sample_shape, device=device)
    sigma = torch.rand(args.batch_size, device=device) * 999
    rows = []
    for compiled in (False, True) if args.compile == "both" else (False,):
        for channels_last in (False, True):
            for train in (True, False):
                network = copy.deepcopy(reference).train(train)
                x = batch
                if channels_last:
                    network = network.to(memory_format=torch.channels_last)
                    x = batch.contiguous(memory_format=torch.channels_last)
                if compiled:
                    network.compile()
                first, times = step_times(network, x, sigma, args.steps, train, dtype)
                rows.append((compiled, channels_last, train, first, statistics.median(times)))
    params = sum(p.numel() for p in reference.parameters())
    print(f"\nexperiment={args.experiment}  network params={params / 1e6:.2f}M  batch={args.batch_size}  "
          f"device={device}  threads={args.threads}  precision={args.precision}  median of {args.steps} steps")
    print("| compile | channels-last | step | first call (s) | median (ms) | ratio to eager |\n|---|---|---|---|---|---|")
    eager = {train: median for compiled, last, train, _, median in rows if not compiled and not last}
    for compiled, last, train, first, median in rows:
        print(f"| {'on' if compiled else 'off'} | {'on' if last else 'off'} | {'train' if train else 'sample'} | "
              f"{first:.2f} | {median * 1e3:.1f} | {median / eager[train]:.3f} |")


if __name__ == "__main__":
    main()
