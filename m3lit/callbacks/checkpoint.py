"""``StepCheckpoint``: Lightning's ``ModelCheckpoint`` by global step, for manual optimisation.

:class:`~m3lit.training.lit_module.M3LitModule` optimises manually. Lightning's ``ModelCheckpoint`` then
warns on every save that it stores the state AFTER the optimizer step, which is exactly right here: a
checkpoint written at the end of global step k holds the weights, optimizer, scheduler, data position
and stage after k steps, and a resume continues with step k + 1. This subclass saves that state every
``every_n_train_steps`` without the warning, and once more when training ends on a step that was not a
multiple, so ``last.ckpt`` always holds the final state.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["StepCheckpoint"]


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` saving every ``every_n_train_steps`` global steps and at the end of training."""

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if pl_module.automatic_optimization:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        every = self._every_n_train_steps
        if every < 1 or trainer.global_step % every != 0 or self._should_skip_saving_checkpoint(trainer):
            return None
        self._save_step(trainer)
        return None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer) and trainer.global_step > 0:
            self._save_step(trainer)

    def _save_step(self, trainer: L.Trainer) -> None:
        candidates = self._monitor_candidates(trainer)
        if self.monitor is None or self.monitor in candidates:
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
