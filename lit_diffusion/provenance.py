"""What every result file records about where its numbers came from: the library versions."""

from __future__ import annotations

import importlib.metadata
import platform

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
