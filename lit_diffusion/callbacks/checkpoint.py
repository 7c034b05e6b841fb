"""Lightning's ModelCheckpoint whose ``last.ckpt`` is the final step of a fit and resumes exactly from there."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from lit_diffusion.resume import reopen_cut_epoch


class ResumableCheckpoint(ModelCheckpoint):
    """:class:`~lightning.pytorch.callbacks.ModelCheckpoint` (same arguments) for "train longer" resumes.

    Lightning writes ``last.ckpt`` at the end of a fit only when no checkpoint was written before (otherwise
    ``last.ckpt`` stays at the last periodic step), and when it does, it writes it after its loop has closed
    the epoch that ``max_steps`` cut short: resumed with a larger ``max_steps``, that run starts the next epoch
    and skips the rest of this one.  Here ``last.ckpt`` is written at the end of the batch that finishes the
    fit (``max_steps`` reached or ``trainer.should_stop``), in the very state of a periodic checkpoint of that
    step, which resumes exactly; and at the end of training whenever it is older than the last step (a fit
    that ends with an epoch).  Checkpoints of a cut epoch written by Lightning's own callback are repaired on
    load (:func:`~lit_diffusion.resume.reopen_cut_epoch`).  The state key is Lightning's, so the state of
    either callback restores the other.
    """

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def _fit_ends_after_this_batch(self, trainer: L.Trainer) -> bool:
        stopping = trainer.should_stop and getattr(trainer.fit_loop, "_can_stop_early", True)
        return 0 <= trainer.max_steps <= trainer.global_step or stopping

    def _save_last_if_stale(self, trainer: L.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._fit_ends_after_this_batch(trainer):
            self._save_last_if_stale(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save_last_if_stale(trainer)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if reopen_cut_epoch(checkpoint):
            rank_zero_info("This checkpoint was written after its epoch was cut short by the end of the fit; "
                           "resuming inside that epoch, where it stopped.")
