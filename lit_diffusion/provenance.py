"""Where numbers come from: the library versions (every result file records them) and the code's git commit
(W&B runs record it)."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

LIBRARIES = ("lit_diffusion", "torch", "torchvision", "torch-fidelity", "torchmetrics", "lightning", "numpy", "scipy")


def versions() -> dict:
    """Python's and each of :data:`LIBRARIES`' installed version (None when not installed)."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(directory: Path = Path(__file__).parent) -> str | None:
    """The commit checked out where ``directory`` lies (``<sha>-dirty`` with uncommitted changes), or None
    outside a git work tree (an installed wheel)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        return sha + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None
