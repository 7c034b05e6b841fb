"""Frozen parts: sub-models that are used but not trained (a guidance classifier's diffusion model, and
next a first-stage autoencoder or a pretrained text encoder; sgm's ``DiffusionEngine`` keeps them outside
the optimizer the same way).

A :class:`Frozen` part has no trainable parameters (so it never reaches the optimizer), stays in eval mode
whatever ``train()`` is called with, and is never copied: ``copy.deepcopy`` returns the part itself, so the
EMA's averaged copy of the model shares it instead of averaging a second copy.  Its weights are stored once
per checkpoint: :class:`~lit_diffusion.callbacks.EMA` leaves them out of the raw-weights copy and
:func:`restore_frozen` puts them back when a checkpoint is read.
"""

from __future__ import annotations

from torch import nn


class Frozen(nn.Module):
    """Wrap ``module`` as a frozen part (``requires_grad=False``, always eval, shared by deep copies)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "Frozen":
        return super().train(False)

    def __deepcopy__(self, memo: dict) -> "Frozen":
        return self

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def frozen_prefixes(model: nn.Module) -> list[str]:
    """State-dict prefixes of the frozen parts of ``model`` (e.g. ``"frozen.diffusion."``)."""
    return [f"{name}." for name, module in model.named_modules() if isinstance(module, Frozen)]


def without_frozen(state: dict, prefixes: list[str]) -> dict:
    """``state`` without the entries of frozen parts."""
    return {k: v for k, v in state.items() if not k.startswith(tuple(prefixes))}


def restore_frozen(raw: dict, full: dict) -> dict:
    """The raw-weights state of a checkpoint completed with the frozen parts stored once in ``full``."""
    return {**{k: v for k, v in full.items() if k not in raw}, **raw}
