"""A rich progress bar that also shows the global step and the training stage.

Lightning's ``RichProgressBar`` shows the metrics logged with ``prog_bar=True`` (``train/loss``,
``train/queries_per_s``); this subclass adds ``step`` and ``stage`` (a string, which ``self.log`` cannot
carry).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

__all__ = ["M3ProgressBar"]


class M3ProgressBar(RichProgressBar):
    """``RichProgressBar`` + ``step`` and ``stage`` in the metrics column; epochs shown without a bound
    when training is step-based (``max_epochs=-1``)."""

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is None or self.trainer.max_epochs < 0:
            return f"Epoch {current_epoch} (max_steps {self.trainer.max_steps})"
        return super()._get_train_description(current_epoch)

    @property
    def total_train_batches(self) -> int | float:
        """Batches of this epoch: Lightning counts the remaining steps only, while the bar counts from the
        epoch's first batch, so a resumed run showed e.g. 15/5; the batches already done are added back."""
        total = super().total_train_batches
        epoch_loop = self.trainer.fit_loop.epoch_loop
        if epoch_loop.restarting and self.trainer.max_epochs == -1 and (self.trainer.max_steps or 0) > 0:
            total += epoch_loop.batch_progress.current.ready
        return total

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return {"step": trainer.global_step, "stage": getattr(pl_module, "stage", "?"), **metrics}
