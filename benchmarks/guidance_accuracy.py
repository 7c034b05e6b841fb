"""Does guidance steer samples to the requested class?  Judged by an independent MNIST classifier.

For classifier-free guidance (a class-conditional model trained with label dropout, e.g. cfg_mnist) at
scales w and for classifier guidance (an unconditional model plus a noise-conditional classifier, e.g.
ddpm_mnist + classifier_guidance_mnist) at scales s, it draws n samples asking for the classes 0…9 in turn
and reports the judge's accuracy on the requested classes (chance 0.10), its confidence and the classifier
FD / KID against held-out digits (benchmarks/mnist_judge.py).  The judge never saw the samples or the guiding
classifier, so a guide that fools its own classifier with adversarial pixels does not score here.

    python benchmarks/guidance_accuracy.py --cfg-ckpt <cfg_mnist last.ckpt> \
        --diffusion-ckpt <ddpm_mnist last.ckpt> --classifier-ckpt <classifier_guidance_mnist last.ckpt>

Writes benchmarks/results/guidance.{csv,md}.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from mnist_judge import Judge

from lit_diffusion.checkpoint import model_from_checkpoint
from lit_diffusion.guidance import ClassifierFree, ClassifierGuidance


def describe_sampler(model) -> str:
    return ", ".join(f"{k} {v}" for k, v in model.hparams.sampler.items() if k != "grid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg-ckpt", required=True, help="class-conditional model trained with label dropout")
    parser.add_argument("--diffusion-ckpt", required=True, help="unconditional model for classifier guidance")
    parser.add_argument("--classifier-ckpt", required=True, help="noise-conditional classifier on its process")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--cfg-scales", type=float, nargs="+", default=[0.0, 1.0, 3.0])
    parser.add_argument("--classifier-scales", type=float, nargs="+", default=[0.0, 1.0, 3.0, 10.0])
    parser.add_argument("--out", default="benchmarks/results/guidance")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)

    cfg_model = model_from_checkpoint(args.cfg_ckpt, "ema", "cpu")
    diffusion = model_from_checkpoint(args.diffusion_ckpt, "ema", "cpu")
    classifier = model_from_checkpoint(args.classifier_ckpt, "ema", "cpu").eval()
    judge = Judge(cfg_model.run_config["data"])
    print(judge.protocol())
    labels = torch.arange(args.n) % 10

    settings = [("classifier-free", w, cfg_model, ClassifierFree(w)) for w in args.cfg_scales]
    settings += [("classifier", s, diffusion, ClassifierGuidance(classifier, s)) for s in args.classifier_scales]
    rows = []
    for kind, scale, model, guider in settings:
        start = time.perf_counter()
        result = model.sample(args.n, seed=0, conditions={"label": labels}, guider=guider)
        rows.append({"guidance": kind, "scale": scale, "nfe": result.nfe,
                     "accuracy": round(judge.accuracy(result.images, labels), 3), **judge.score(result.images),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(rows[-1], flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    protocol = (f"Protocol: classifier-free: {args.cfg_ckpt} (EMA; sampler {describe_sampler(cfg_model)}); classifier: "
                f"{args.diffusion_ckpt} guided by {args.classifier_ckpt} (EMA; sampler {describe_sampler(diffusion)}); "
                f"n = {args.n} samples asking for classes 0…9 in turn, seed 0; {judge.protocol()}; accuracy = the "
                f"judge's on the requested classes (chance 0.10); NFE counts guided denoiser calls (classifier-free: one "
                f"network forward over a batch of 2n each; classifier: one forward plus the classifier's forward and backward); CPU, {torch.get_num_threads()} threads.\n\n")
    header = ("| guidance | scale | NFE | judge accuracy ↑ | confidence | classifier FD | classifier KID | seconds |\n"
              "|---|---|---|---|---|---|---|---|\n")
    table = "".join(f"| {r['guidance']} | {r['scale']:g} | {r['nfe']} | {r['accuracy']} | {r['confidence']} | "
                    f"{r['classifier_fd']} | {r['classifier_kid']} | {r['seconds']} |\n" for r in rows)
    out.with_suffix(".md").write_text(protocol + header + table)
    print(protocol + header + table)


if __name__ == "__main__":
    main()
