"""Loading lit_diffusion checkpoints safely.

Checkpoints are read with ``torch.load(weights_only=True)`` (tensors and plain containers only: no pickled
code runs), must carry the ``lit_diffusion`` entry written by :class:`~lit_diffusion.models.DiffusionModule`,
and rebuild their model only from trusted config targets (:mod:`lit_diffusion.config`).

A checkpoint written with EMA holds the averaged weights as ``state_dict`` and the raw ones as
``current_model_state`` (Lightning's ``WeightAveraging``); frozen parts are stored once, in ``state_dict``
(:mod:`lit_diffusion.frozen`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lit_diffusion.config import trusted_class
from lit_diffusion.errors import UserError
from lit_diffusion.frozen import restore_frozen

CHECKPOINT_KEY = "lit_diffusion"
WEIGHTS = ("ema", "raw")


def load_checkpoint(path: str | Path) -> dict:
    """Read and validate a checkpoint file; every problem is one :class:`UserError`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"'{path}' is a folder, not a checkpoint file; pass the .ckpt inside it, e.g. "
                        f"{path / 'checkpoints' / 'last.ckpt'}")
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
    if missing := [key for key in ("state_dict", "hyper_parameters") if key not in checkpoint]:
        raise UserError(f"'{path}' is an incomplete checkpoint (it has no {' or '.join(missing)}); use another .ckpt "
                        "of the run")
    return checkpoint


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available; use device=cpu")
    return torch.device(name)


def model_state(checkpoint: dict, weights: str, path: str | Path) -> dict:
    """The EMA (default) or raw weights of a loaded checkpoint, frozen parts included."""
    if weights not in WEIGHTS:
        raise UserError(f"weights={weights} is not one of {', '.join(WEIGHTS)}")
    has_ema = "current_model_state" in checkpoint
    if weights == "raw" and has_ema:
        return restore_frozen(checkpoint["current_model_state"], checkpoint["state_dict"])
    if weights == "ema" and not has_ema:
        print(f"note: '{path}' was trained without EMA; using its raw weights")
    return checkpoint["state_dict"]


def checkpoint_spec(checkpoint: dict) -> dict:
    """What rebuilds a checkpoint's model without its file: class, hyper-parameters and run config."""
    return {"model_class": checkpoint[CHECKPOINT_KEY]["model_class"],
            "hyper_parameters": checkpoint["hyper_parameters"], "config": checkpoint[CHECKPOINT_KEY].get("config")}


def model_from_spec(spec: dict, state: dict | None = None) -> nn.Module:
    """Build a model from :func:`checkpoint_spec`'s fields (trusted classes only) and load ``state``."""
    cls = trusted_class(spec["model_class"])
    try:
        model = cls(**spec["hyper_parameters"], run_config=spec.get("config"))
    except TypeError as err:
        raise UserError(f"this checkpoint's model arguments do not fit {cls.__name__} ({err}); it was written by "
                        "another version of lit_diffusion: retrain it, or sample with that version") from None
    if state is not None:
        model.load_state_dict(state)
    return model


def model_from_checkpoint(path: str | Path, weights: str = "ema", device: str = "cpu") -> nn.Module:
    """Rebuild the LightningModule of a checkpoint with its EMA (default) or raw weights, in eval mode."""
    checkpoint = load_checkpoint(path)
    model = model_from_spec(checkpoint_spec(checkpoint), model_state(checkpoint, weights, path))
    return model.to(resolve_device(device)).eval()
