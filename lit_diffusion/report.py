"""Benchmark tables: ``python -m lit_diffusion.report [results=CSV] [out=PREFIX] [plot=nfe|steps] [wandb=true]``.

Reads the rows that :mod:`lit_diffusion.evaluate` appended to its CSV and writes a markdown table (and a CSV)
with the protocol columns (n, reference, sampler, steps, NFE, EMA/raw, extractor, checkpoint hash), followed
by the published results of the same model families with their citations (:mod:`lit_diffusion.metrics.published`).
``plot=nfe`` draws FID against NFE per sampler; ``plot=steps`` FID against the training step, read from
names of the form ``experiment@step`` (evaluate's ``name=``); ``plot=guidance`` caption accuracy and KID against
the guidance scale per experiment (the fidelity/diversity trade-off curve of GLIDE and Imagen).
"""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

from omegaconf import DictConfig

from lit_diffusion.cli import entry_point
from lit_diffusion.errors import UserError
from lit_diffusion.files import atomic_write_text
from lit_diffusion.metrics.published import PUBLISHED, published_for

OURS = ("name", "dataset", "fid", "fid_std", "kid_mean", "precision", "recall", "is_mean", "bpd", "n", "seeds", "reference_id",
        "reference_n", "split", "sampler", "steps", "nfe", "weights", "extractor", "checkpoint_sha256", "wall_seconds")
THEIRS = ("model", "dataset", "metric", "value", "sampler", "nfe", "experiment", "citation")
PLOTS = ("nfe", "steps", "guidance")


def fmt(value) -> str:
    if value in (None, ""):
        return ""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)[:12] if len(str(value)) == 64 else str(value)  # short checkpoint hash
    return f"{number:.4g}" if not number.is_integer() else str(int(number))


def markdown(rows: list[dict], columns: tuple[str, ...]) -> str:
    present = [c for c in columns if any(r.get(c) not in (None, "") for r in rows)]
    lines = ["| " + " | ".join(present) + " |", "|" + "---|" * len(present)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in present) + " |" for r in rows]
    return "\n".join(lines)


def plot_path(out: Path, x: str) -> Path:
    return out.parent / f"{out.name}_{'accuracy_kid' if x == 'guidance' else 'fid'}_vs_{x}.png"


def plot(rows: list[dict], x: str, path: Path):
    """Draw and save the ``x`` plot; returns the (closed) matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x == "guidance":
        return guidance_plot(rows, path, plt)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    groups: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if not r.get("fid"):
            continue
        if x == "nfe" and r.get("nfe"):
            groups.setdefault(r["sampler"], []).append((float(r["nfe"]), float(r["fid"])))
        elif x == "steps" and "@" in r["name"]:
            name, step = r["name"].rsplit("@", 1)
            groups.setdefault(name, []).append((float(step), float(r["fid"])))
    if not groups:
        raise UserError(f"no rows to plot FID against {x} (plot=steps needs evaluate name=EXPERIMENT@STEP)")
    for label, points in sorted(groups.items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel("NFE" if x == "nfe" else "training step")
    ax.set_ylabel("FID")
    ax.legend()
    ax.grid(alpha=0.3)
    return save(fig, path, plt)


def save(fig, path: Path, plt):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def guidance_plot(rows: list[dict], path: Path, plt):
    """Caption accuracy (left) and KID × 10³ (right) against the guidance scale w, one line per experiment."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("guidance_scale") not in (None, "") and (r.get("caption_accuracy") or r.get("kid_mean")):
            groups.setdefault(r["name"].split("@")[0], []).append(r)
    if not groups:
        raise UserError("no rows to plot against the guidance scale: plot=guidance needs evaluate rows with "
                        "guidance_scale and caption_accuracy or kid (metrics=[caption_accuracy,kid])")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, scale, label in ((axes[0], "caption_accuracy", 1, "caption accuracy"),
                                  (axes[1], "kid_mean", 1e3, "KID × 10³")):
        for name, group in sorted(groups.items()):
            points = sorted((float(r["guidance_scale"]), float(r[key]) * scale) for r in group if r.get(key))
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.set_xlabel("guidance scale w (0 unconditional, 1 conditional)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    return save(fig, path, plt)


def read_rows(path: Path) -> list[dict]:
    """The rows of an evaluation CSV; a file that is not one is a :class:`UserError`."""
    if not path.is_file():
        raise UserError(f"no evaluation results at {path.absolute()}; run python -m lit_diffusion.evaluate first "
                        "(it appends to outputs/evaluate/results.csv) or pass results=CSV")
    try:
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"'{path}' is not a CSV of evaluation results ({err})") from err
    if "name" not in (reader.fieldnames or []):
        raise UserError(f"'{path}' is not a CSV of evaluation results (it has no 'name' column); pass the results=CSV "
                        "that python -m lit_diffusion.evaluate appends to")
    return rows


def report(cfg: DictConfig) -> str:
    if cfg.plot is not None:
        if cfg.plot not in PLOTS or not cfg.out:
            raise UserError(f"plot={cfg.plot}: choose plot={' | '.join(PLOTS)}, with out=PREFIX for the image")
        if importlib.util.find_spec("matplotlib") is None:
            raise UserError("plot= needs matplotlib: pip install 'lit_diffusion[report]'")
    rows = read_rows(Path(cfg.results))
    published = PUBLISHED if cfg.all_published else [p for n in dict.fromkeys(r["name"].split("@")[0] for r in rows)
                                                     for p in published_for(n)]
    published = list({id(p): p for p in published}.values())
    text = "## Our evaluations\n\n" + markdown(rows, OURS)
    if published:
        text += "\n\n## Published results (same model families)\n\n" + markdown(published, THEIRS)
    print(text)
    if cfg.out:
        out = Path(cfg.out)
        atomic_write_text(out.with_suffix(".md"), text + "\n")
        table = io.StringIO()
        writer = csv.DictWriter(table, OURS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out.with_suffix(".csv"), table.getvalue())
        if cfg.plot:
            plot(rows, cfg.plot, plot_path(out, cfg.plot))
    if cfg.wandb:
        import wandb

        run = wandb.init(project="lit_diffusion", job_type="report", mode=None if wandb.api.api_key else "offline")
        run.log({"evaluations": wandb.Table(columns=list(OURS), data=[[r.get(c) for c in OURS] for r in rows]),
                 "published": wandb.Table(columns=list(THEIRS), data=[[p.get(c) for c in THEIRS] for p in published])})
        run.finish()
    return text


main = entry_point("report")(report)


if __name__ == "__main__":
    main()
