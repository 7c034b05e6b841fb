"""Exponential moving average of the weights (Polyak averaging; Ho et al. 2020 use decay 0.9999).

Built on Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging`, which keeps the average in a
:class:`torch.optim.swa_utils.AveragedModel`, swaps it in for validation and writes it to the checkpoint's
``state_dict`` (the raw weights go to ``current_model_state``), so ``load_from_checkpoint`` gives the EMA
model and resuming restores both.  Added here: the decay warm-up min(decay, (1+n)/(10+n)) of
TensorFlow's ExponentialMovingAverage (used by the DDPM and score SDE code), an update interval and a
start step, the module keeps its raw weights after fit, the average lives on the training device, and under
FSDP (``trainer=fsdp``) it is updated from and swapped with the gathered parameters.  Frozen parts
(:mod:`lit_diffusion.frozen`) are shared with the averaged copy, not averaged, and stored once: the raw-weights
copy leaves them out.
"""

from __future__ import annotations

import contextlib
import itertools

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.strategies import FSDPStrategy
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.distributed.fsdp._common_utils import clean_tensor_name  # drops the FSDP / checkpoint wrappers' prefixes

from lit_diffusion.frozen import frozen_prefixes, restore_frozen, without_frozen
from lit_diffusion.models.base import DiffusionModule


class EMA(WeightAveraging):
    """EMA of all parameters and buffers, updated every ``update_every`` optimizer steps.

    Args:
        decay: target decay β of θ_ema ← β θ_ema + (1 − β) θ.
        warmup: use min(β, (1+n)/(10+n)) after n updates, so early averages are not dominated by the init.
        update_every: optimizer steps between updates.
        start_step: first optimizer step (0-based) that updates the average.
    """

    def __init__(self, decay: float = 0.9999, warmup: bool = True, update_every: int = 1, start_step: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.update_every = update_every
        self.start_step = start_step
        super().__init__(multi_avg_fn=self._average, use_buffers=True)

    def effective_decay(self, num_averaged: int) -> float:
        return min(self.decay, (1 + num_averaged) / (10 + num_averaged)) if self.warmup else self.decay

    def _average(self, ema_params: list, params: list, num_averaged: torch.Tensor) -> None:
        weight = 1.0 - self.effective_decay(int(num_averaged))
        floating = [(e, p) for e, p in zip(ema_params, params) if e.is_floating_point() and e is not p]
        if floating:
            ema, current = zip(*floating)
            torch._foreach_lerp_(list(ema), list(current), weight)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx >= self.start_step and (step_idx + 1) % self.update_every == 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Build the average on the training device (Lightning moves the module there only after this hook)."""
        self._device = self._device or trainer.strategy.root_device
        super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer, pl_module) -> None:
        """The average was copied before the strategy set the module up; a ``*-true`` precision then cast the
        module (FSDP's ``32-true`` turns the float64 schedule tables into float32). The average's buffers take the
        module's dtypes, so that each pair is averaged in one dtype."""
        super().on_fit_start(trainer, pl_module)
        if self._average_model is not None:
            for average, current in zip(self._average_model.module.buffers(), pl_module.buffers()):
                average.data = average.data.to(current.dtype)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with whole_parameters(trainer, writeback=False):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        with whole_parameters(trainer, writeback=True):
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        with whole_parameters(trainer, writeback=True):
            super().on_validation_epoch_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if "current_model_state" in checkpoint:
            checkpoint["current_model_state"] = without_frozen(checkpoint["current_model_state"],
                                                               frozen_prefixes(pl_module))

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if isinstance(trainer.strategy, FSDPStrategy) and "state_dict" not in checkpoint:
            self._load_into_fsdp(trainer, pl_module, checkpoint)
            return
        if "current_model_state" in checkpoint:
            checkpoint["current_model_state"] = restore_frozen(checkpoint["current_model_state"],
                                                               checkpoint["state_dict"])
        super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def _load_into_fsdp(self, trainer, pl_module, checkpoint: dict) -> None:
        """Lightning's FSDP has already loaded ``state_dict`` (the average) into the wrapped module and removed it
        from the checkpoint: the average is copied from the module, then the raw weights are put back into it
        (frozen parts are in neither copy of the raw weights, and equal in both)."""
        if self._average_model is None or "current_model_state" not in checkpoint:
            return
        raw = checkpoint["current_model_state"]
        average = self._average_model.module
        with whole_parameters(trainer, writeback=True):
            for kept, loaded in zip(itertools.chain(average.parameters(), average.buffers()),
                                    itertools.chain(pl_module.parameters(), pl_module.buffers())):
                kept.data.copy_(loaded.data)
            for name, tensor in itertools.chain(pl_module.named_parameters(), pl_module.named_buffers()):
                if (name := clean_tensor_name(name)) in raw:
                    tensor.data.copy_(raw[name])
        for name, value in checkpoint.get("averaging_state", {}).items():
            self._average_model.get_buffer(name).copy_(value)

    def on_train_end(self, trainer, pl_module) -> None:
        """Keep the raw weights in the module (Lightning's default would overwrite them with the average)."""

    @property
    def averaged_module(self) -> DiffusionModule | None:
        """The EMA copy of the LightningModule (None outside fit)."""
        return None if self._average_model is None else self._average_model.module


def whole_parameters(trainer: L.Trainer, writeback: bool) -> contextlib.AbstractContextManager:
    """Inside the block the module's parameters are whole (FSDP gathers its shards, and with ``writeback`` keeps
    the changes made to them); under other strategies they already are."""
    if isinstance(trainer.strategy, FSDPStrategy):
        return FullyShardedDataParallel.summon_full_params(trainer.strategy.model, writeback=writeback)
    return contextlib.nullcontext()


def ema_or_live(trainer: L.Trainer, pl_module: DiffusionModule, use_ema: bool = True) -> DiffusionModule:
    """The EMA copy of the module being trained when ``use_ema`` and an :class:`EMA` callback has one, else
    the module itself (what sample grids and in-training evaluation draw from)."""
    if use_ema:
        for callback in trainer.callbacks:
            if isinstance(callback, EMA) and callback.averaged_module is not None:
                return callback.averaged_module
    return pl_module
