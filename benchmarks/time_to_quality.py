"""Time to quality: the FID that a fixed wall-clock budget of training buys, per design choice.

Each candidate is one line of Hydra overrides on the main job (``experiment=ddpm_mnist``, unless it names another
experiment).  Candidates run one
at a time, each in its own process (``python -m lit_diffusion.run``), for the same budget (Lightning's
``trainer.max_time``; ``trainer.max_steps=-1``, in-training evaluation off), then every sampler setting is
scored with the same ``evaluate`` protocol (``n`` samples against the whole training split, ``--ref-n null``).
Writes ``<out>/time_to_quality.csv`` and ``.md`` (candidate, overrides, parameters, steps, s/step, sampler, NFE,
FID, KID, sampling seconds) and, with ``--minutes`` listing several budgets, ``fid_vs_minutes.png`` for the
best ``--plot-best`` candidates.  Rows of earlier invocations with the same ``--out`` are kept (a
candidate, budget and sampler measured again replaces its row), so a screen at a short budget and a longer
run of its best candidates make one table and one plot; a run folder or evaluation JSON that is already there is
reused, not measured again (delete it to remeasure).  Timings need an idle machine: run nothing else meanwhile.

    python benchmarks/time_to_quality.py --minutes 10 [--only NAME ...] [--n 1000] [--out benchmarks/results/ttq]
    python benchmarks/time_to_quality.py --minutes 2 5 10 20 --only eps_default edm --plot-best 2
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

CANDIDATES: dict[str, list[str]] = {
    "eps_default": [],
    "v_prediction": ["model.prediction=v"],
    "x0_prediction": ["model.prediction=x0"],
    "min_snr_5": ["model.snr_gamma=5"],
    "edm": ["experiment=edm_mnist"],
    "v_lr_2e-3": ["model.prediction=v", "model.optimizer.lr=2e-3"],
    "eps_default_repeat": [],  # the default again: the run-to-run noise of a row
    "eps_half_width": ["network.base_channels=8"],
    "eps_no_attention": ["network.attention_resolutions=[]"],
    "eps_batch_32": ["data.batch_size=32"],
    "eps_lr_2e-3": ["model.optimizer.lr=2e-3"],
    "eps_ema_0.999": ["callbacks.ema.decay=0.999"],
    "eps_clip_grad": ["trainer.gradient_clip_val=1.0"],
}
SAMPLERS: dict[str, list[str]] = {
    "ddim_20": ["sampler=ddim", "sampler.steps=20"],
    "ddim_50": ["sampler=ddim", "sampler.steps=50"],
    "dpm_solver_20": ["sampler=dpm_solver", "sampler.steps=20"],
    "heun_10": ["sampler=heun", "sampler.steps=10"],
}
FIELDS = ["candidate", "minutes", "overrides", "params", "steps", "s_per_step", "sampler", "nfe", "fid", "kid",
          "sampling_seconds", "train_wall"]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def train(name: str, overrides: list[str], minutes: float, out: Path, extra: list[str]) -> tuple[Path, float]:
    run_dir = out / "runs" / f"{name}_{minutes:g}min"
    budget = time.strftime("%H:%M:%S", time.gmtime(minutes * 60))
    base = [] if any(o.startswith("experiment=") for o in overrides) else ["experiment=ddpm_mnist"]
    ckpt, wall_file = run_dir / "checkpoints" / "last.ckpt", run_dir / "train_wall_seconds.txt"
    if ckpt.is_file() and wall_file.is_file():  # measured by an earlier invocation
        return ckpt, float(wall_file.read_text())
    start = time.perf_counter()
    run(["lit_diffusion.run", *base, *overrides, f"+trainer.max_time=00:{budget}",
         "trainer.max_steps=-1", "callbacks.evaluation=null", f"hydra.run.dir={run_dir}", "logger=csv", *extra],
        cwd=out)
    wall = time.perf_counter() - start
    wall_file.write_text(f"{wall:.1f}\n")
    return ckpt, wall


def score(ckpt: Path, sampler: list[str], n: int, ref_n: str, out: Path, extra: list[str]) -> dict:
    result = out / "evaluations" / f"{ckpt.parent.parent.name}_{'_'.join(s.split('=')[-1] for s in sampler)}.json"
    if result.is_file():  # scored by an earlier invocation
        return json.loads(result.read_text())
    run(["lit_diffusion.evaluate", f"ckpt={ckpt}", f"n={n}", "split=train", f"ref_n={ref_n}", "metrics=[fid,kid]",
         *sampler, f"out={result}", f"csv={out / 'evaluations.csv'}", *extra], cwd=out)
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0])
    parser.add_argument("--only", nargs="*", default=None, help=f"candidates (default all): {', '.join(CANDIDATES)}")
    parser.add_argument("--samplers", nargs="*", default=list(SAMPLERS))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--ref-n", default="null", help="reference digits (null: the whole training split)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/time_to_quality"))
    parser.add_argument("--plot-best", type=int, default=3)
    parser.add_argument("--train-extra", nargs="*", default=[], help="overrides for every training run (smoke tests)")
    parser.add_argument("--eval-extra", nargs="*", default=[], help="overrides for every evaluation (smoke tests)")
    args = parser.parse_args()
    names = args.only or list(CANDIDATES)
    if unknown := sorted(set(names) - set(CANDIDATES)) + sorted(set(args.samplers) - set(SAMPLERS)):
        raise SystemExit(f"unknown candidates/samplers {unknown}")
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for minutes in args.minutes:
        for name in names:
            ckpt, wall = train(name, CANDIDATES[name], minutes, out, args.train_extra)
            checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
            steps = checkpoint["global_step"]
            params = sum(v.numel() for k, v in checkpoint["state_dict"].items() if k.startswith("network."))
            for sampler in args.samplers:
                result = score(ckpt, SAMPLERS[sampler], args.n, args.ref_n, out, args.eval_extra)
                rows.append({"candidate": name, "minutes": minutes, "overrides": " ".join(CANDIDATES[name]),
                             "params": params, "steps": steps, "s_per_step": round(minutes * 60 / max(steps, 1), 3),
                             "sampler": sampler, "nfe": result["nfe"], "fid": round(result["summary"]["fid"]["mean"], 2),
                             "kid": round(result["summary"]["kid_mean"]["mean"], 5),
                             "sampling_seconds": round(result["runs"][0]["seconds"], 1), "train_wall": round(wall, 1)})
                print(rows[-1], flush=True)
    rows = merged(out / "time_to_quality.csv", rows)
    lines = ["| " + " | ".join(FIELDS) + " |", "|" + "---|" * len(FIELDS)]
    lines += ["| " + " | ".join(str(row[f]) for f in FIELDS) + " |"
              for row in sorted(rows, key=lambda r: (float(r["minutes"]), float(r["fid"])))]
    (out / "time_to_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if len({float(r["minutes"]) for r in rows}) > 1:
        if importlib.util.find_spec("matplotlib") is None:
            print("no plot: pip install 'lit_diffusion[report]' (matplotlib) for fid_vs_minutes.png")
        else:
            plot(rows, args.plot_best, out / "fid_vs_minutes.png")


def merged(path: Path, rows: list[dict]) -> list[dict]:
    """The CSV's earlier rows, less those that ``rows`` measure again, then ``rows``; written back to ``path``."""
    def key(row: dict) -> tuple:
        return row["candidate"], float(row["minutes"]), row["sampler"]

    new = {key(row) for row in rows}
    earlier = list(csv.DictReader(path.open(newline=""))) if path.is_file() else []
    rows = [row for row in earlier if key(row) not in new] + rows
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def plot(rows: list[dict], best: int, path: Path) -> None:
    import matplotlib.pyplot as plt  # the report extra; only the multi-budget plot needs it

    final = max(float(r["minutes"]) for r in rows)
    ranked = sorted({(float(r["fid"]), r["candidate"], r["sampler"]) for r in rows
                     if float(r["minutes"]) == final})[:best]
    for _, name, sampler in ranked:
        points = sorted((float(r["minutes"]), float(r["fid"])) for r in rows
                        if r["candidate"] == name and r["sampler"] == sampler)
        plt.plot(*zip(*points), marker="o", label=f"{name} / {sampler}")
    plt.xlabel("training minutes (wall)")
    plt.ylabel("FID (1,000 samples vs the training digits)")
    plt.legend()
    plt.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
