"""Rich progress bar that counts optimizer steps: runs here are sized in steps (``max_epochs: -1``), where
Lightning's bar would print ``Epoch 17/-2``."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """``Epoch e`` (no negative epoch total) and a ``step k/max_steps`` field beside the metrics."""

    def get_metrics(self, trainer, pl_module) -> dict:
        total = f"/{trainer.max_steps}" if trainer.max_steps > 0 else ""
        return {"step": f"{trainer.global_step}{total}", **super().get_metrics(trainer, pl_module)}

    def _get_train_description(self, current_epoch: int) -> str:  # Lightning's hook for the bar's label
        description = f"Epoch {current_epoch}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            description += f"/{self.trainer.max_epochs - 1}"
        return f"{description:{len(self.validation_description)}}"
