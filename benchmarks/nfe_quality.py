"""Sample quality versus NFE for every sampler on one trained MNIST model (issue 4's benchmark).

Quality is measured with a small MNIST classifier trained here on the model's own training split (a few
seconds): the Fréchet distance between its 64-d penultimate features of samples and of held-out digits
("classifier FD", FID's recipe with an MNIST network instead of Inception) and its mean confidence. All
samplers use the same seed and sample count, so the numbers compare samplers; small n biases FD upwards.
The reference is 1000-step ancestral sampling; the goal is a sampler within 10 % of its FD at ≤ 20 NFE.

    python benchmarks/nfe_quality.py --ckpt outputs/ddpm_mnist/.../checkpoints/last.ckpt --n 200

Writes benchmarks/results/nfe_quality.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from torch import nn

from lit_diffusion.checkpoint import model_from_checkpoint
from lit_diffusion.config import safe_instantiate
from lit_diffusion.metrics.scores import fid as frechet_distance

KARRAS = {"grid": {"spacing": "karras", "rho": 7.0}}
SAMPLERS = {  # name -> list of (sampler config); NFE is what the run reports
    "ancestral": [{"algorithm": "ancestral", "steps": s, "clip_denoised": True} for s in (10, 20, 50)],
    "ddim": [{"algorithm": "ddim", "steps": s, "eta": 0.0, "clip_denoised": True} for s in (10, 20, 50)],
    "euler": [{"algorithm": "euler", "steps": s, **KARRAS} for s in (10, 20, 50)],
    "heun": [{"algorithm": "heun", "steps": s, **KARRAS} for s in (5, 10, 25)],
    "dpm_solver": [{"algorithm": "dpm_solver", "steps": s, **KARRAS} for s in (10, 20, 50)],
}
REFERENCE = {"algorithm": "ancestral", "steps": None, "clip_denoised": True}


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.features(x))


def train_classifier(loader, epochs: int) -> Classifier:
    torch.manual_seed(0)
    net = Classifier()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        for batch in loader:
            loss = nn.functional.cross_entropy(net(batch["image"]), batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def score(net: Classifier, images: torch.Tensor, real_features: torch.Tensor) -> tuple[float, float]:
    feats = net.features(images)
    confidence = net.head(feats).softmax(-1).max(-1).values.mean().item()
    return frechet_distance(feats.double(), real_features.double()), confidence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/nfe_quality")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)

    model = model_from_checkpoint(args.ckpt, "ema", "cpu")
    data = safe_instantiate({**model.run_config["data"], "batch_size": 128})
    data.setup("fit")
    net = train_classifier(data.train_dataloader(), args.epochs)
    val = next(iter(torch.utils.data.DataLoader(data.val_set, batch_size=len(data.val_set))))
    with torch.no_grad():
        accuracy = (net(val["image"]).argmax(-1) == val["label"]).float().mean().item()
        real = net.features(val["image"])
    print(f"classifier: held-out accuracy {accuracy:.3f} on {len(real)} digits; FD of held-out vs itself 0")

    rows = []
    for name, configs in [("ancestral (1000 steps)", [REFERENCE])] + list(SAMPLERS.items()):
        for sampler in configs:
            start = time.perf_counter()
            result = model.sample(args.n, sampler, seed=0)
            fd, conf = score(net, result.images, real)
            rows.append({"sampler": name, "steps": sampler["steps"] or 1000, "nfe": result.nfe, "classifier_fd": round(fd, 3),
                         "confidence": round(conf, 4), "seconds": round(time.perf_counter() - start, 1)})
            print(rows[-1], flush=True)

    reference_fd = rows[0]["classifier_fd"]
    best20 = min((r for r in rows[1:] if r["nfe"] <= 20), key=lambda r: r["classifier_fd"])
    ratio = best20["classifier_fd"] / reference_fd
    verdict = "meets" if ratio <= 1.10 else "misses"
    summary = (f"best at ≤ 20 NFE: {best20['sampler']} ({best20['nfe']} NFE) classifier FD {best20['classifier_fd']} = "
               f"{ratio:.2f} × 1000-step ancestral ({reference_fd}); {verdict} the 10 % goal")
    print(summary)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = "| sampler | steps | NFE | classifier FD ↓ | confidence ↑ | seconds |\n|---|---|---|---|---|---|\n"
    table = "".join(f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['classifier_fd']} | {r['confidence']} | {r['seconds']} |\n"
                    for r in rows)
    protocol = (f"Protocol: checkpoint {args.ckpt} (EMA weights), n = {args.n} samples, seed 0, "
                f"classifier {args.epochs} epochs (held-out accuracy {accuracy:.3f}), FD on its 64-d features vs "
                f"{len(real)} held-out digits; CPU, 2 threads.\n\n")
    out.with_suffix(".md").write_text(protocol + header + table + "\n" + summary + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[report]'): no plot")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in SAMPLERS:
        pts = [(r["nfe"], r["classifier_fd"]) for r in rows if r["sampler"] == name]
        ax.plot(*zip(*pts), marker="o", label=name)
    ax.axhline(reference_fd, color="k", ls="--", label="ancestral, 1000 NFE")
    ax.set_xscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel("classifier FD (lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
