"""Loading lit_diffusion checkpoints safely.

Checkpoints are read with ``torch.load(weights_only=True)`` (tensors and plain containers only: no pickled
code runs), must carry the ``lit_diffusion`` entry written by :class:`DiffusionModule`, and rebuild their
model only from trusted config targets (:mod:`lit_diffusion.config`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lit_diffusion.config import trusted_class
from lit_diffusion.errors import UserError
from lit_diffusion.models.base import CHECKPOINT_KEY, DiffusionModule

WEIGHTS = ("ema", "raw")


def load_checkpoint(path: str | Path) -> dict:
    """Read and validate a checkpoint file; every problem is one :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist (looked at {path.resolve()}); pass ckpt=PATH "
                        "to a .ckpt written by a lit_diffusion run (its checkpoints/ folder)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, not a torch file, or pickled objects beyond plain data
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"'{path}' is not a readable checkpoint ({reason}). It is corrupt, truncated, or holds "
                        "pickled objects that lit_diffusion refuses to load; use a .ckpt from a lit_diffusion run")
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise UserError(f"'{path}' is not a lit_diffusion checkpoint (it has no '{CHECKPOINT_KEY}' entry); use a "
                        ".ckpt from the checkpoints/ folder of a lit_diffusion run")
    return checkpoint


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available; use device=cpu")
    return torch.device(name)


def model_from_checkpoint(path: str | Path, weights: str = "ema", device: str = "cpu") -> DiffusionModule:
    """Rebuild the LightningModule of a checkpoint with its EMA (default) or raw weights, in eval mode."""
    if weights not in WEIGHTS:
        raise UserError(f"weights={weights} is not one of {', '.join(WEIGHTS)}")
    checkpoint = load_checkpoint(path)
    cls = trusted_class(checkpoint[CHECKPOINT_KEY]["model_class"])
    model = cls(**checkpoint["hyper_parameters"], run_config=checkpoint[CHECKPOINT_KEY].get("config"))
    # Lightning's WeightAveraging stores the EMA weights as state_dict and the raw ones beside them.
    has_ema = "current_model_state" in checkpoint
    if weights == "raw" and has_ema:
        state = checkpoint["current_model_state"]
    else:
        if weights == "ema" and not has_ema:
            print(f"note: '{path}' was trained without EMA; using its raw weights")
        state = checkpoint["state_dict"]
    model.load_state_dict(state)
    return model.to(resolve_device(device)).eval()
