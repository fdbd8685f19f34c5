"""``StepCheckpoint``: Lightning's ``ModelCheckpoint`` by global step, for manual optimisation.

:class:`~m3lit.training.lit_module.M3LitModule` optimises manually. Lightning's ``ModelCheckpoint`` then
warns on every save that it stores the state AFTER the optimizer step, which is exactly right here: a
checkpoint written at the end of global step k holds the weights, optimizer, scheduler, data position
and stage after k steps, and a resume continues with step k + 1. This subclass saves that state every
``every_n_train_steps`` without the warning, and once more when training ends on a step that was not a
multiple, so ``last.ckpt`` always holds the final state.

Disk policy (one file per step, never two copies of it):

- ``last.ckpt`` is a HARD LINK to the step file written at the same step (one file on disk, two names;
  deleting either name leaves the other intact). Only where the file system refuses hard links is it a
  copy, with a warning. When no step file was written at that step (``save_top_k=0``, or a monitored
  step outside the top k), ``last.ckpt`` is written on its own.
- An existing file is unlinked before a new one is written under its name, so rewriting ``last.ckpt``
  never truncates the step file it was linked to.
- ``keep_last_n``: with ``save_top_k=-1`` (every step file saved) and no monitor, only the N newest step
  files are kept; older ones are deleted after each save (``last.ckpt`` links to the newest, so it is never
  among them).
- ``save_weights_only`` (Lightning's option): the model's weights and m3lit's metadata only, no optimizer or
  loop state; such files load for ``m3lit.export`` / ``m3lit.evaluate`` (:mod:`m3lit.model.training_checkpoint`) but cannot
  resume a run.

Size per checkpoint (fp32 training): weights take 4 bytes per parameter and AdamW's two moments 8 more,
so a full checkpoint is about 12 bytes/parameter and a weights-only one 4: ``BAAI/bge-m3`` (568M
parameters) ~6.8 GB full, ~2.3 GB weights-only.

A run stopped by SIGTERM (a cluster's time limit, ``kill``) or Ctrl+C ends with one line that says which
checkpoint holds the run and how to continue it: ``python -m m3lit.train resume=<run dir>`` (the folder
above ``checkpoints/``), or that no checkpoint was written yet.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["StepCheckpoint"]

log = logging.getLogger(__name__)


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` saving every ``every_n_train_steps`` global steps and at the end of training.

    Args:
        keep_last_n: keep only the N newest step files (needs ``save_top_k=-1`` and ``monitor=None``); None
            keeps what ``save_top_k`` keeps.
        kwargs: :class:`~lightning.pytorch.callbacks.ModelCheckpoint` arguments (``save_last`` True or
            ``"link"``: ``last.ckpt`` is a hard link either way, see the module docstring).
    """

    def __init__(self, *args: Any, keep_last_n: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if keep_last_n is not None:
            if keep_last_n < 1:
                raise ValueError(f"StepCheckpoint: keep_last_n must be >= 1 or None, got {keep_last_n}")
            if self.save_top_k != -1 or self.monitor is not None:
                raise ValueError(
                    f"StepCheckpoint: keep_last_n={keep_last_n} needs save_top_k=-1 and monitor=None (got "
                    f"save_top_k={self.save_top_k}, monitor={self.monitor!r}); save_top_k=1 already keeps "
                    "only the newest step file"
                )
        self.keep_last_n = keep_last_n
        self._step_files: list[str] = []  # step files written by this run, oldest first (for keep_last_n)

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

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        super().on_exception(trainer, pl_module, exception)  # saves when save_on_exception is set
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and trainer.is_global_zero:
            log.warning(
                self.resume_hint(trainer, "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl+C")
            )

    def resume_hint(self, trainer: L.Trainer, cause: str) -> str:
        """What a stopped run should do next: the checkpoint that holds it and the command that continues it."""
        stopped = f"training stopped by {cause} at global step {trainer.global_step}"
        last = self.last_model_path
        if not last or not os.path.isfile(last):
            return f"{stopped} before any checkpoint was written: nothing to resume; start the run again"
        folder = Path(last).parent
        how = (
            f"python -m m3lit.train resume={folder.parent}"
            if folder.name == "checkpoints"
            else f"ckpt_path={last} with the run's own overrides"
        )
        return (
            f"{stopped}; the last checkpoint, {last}, holds step {self._last_global_step_saved} (later steps "
            f"run again). Continue with: {how}"
        )

    def _save_step(self, trainer: L.Trainer) -> None:
        candidates = self._monitor_candidates(trainer)
        if self.monitor is None or self.monitor in candidates:
            self._save_topk_checkpoint(trainer, candidates)
            if self.keep_last_n and self._last_global_step_saved == trainer.global_step:  # a step file
                self._step_files = [f for f in self._step_files if f != self._last_checkpoint_saved]
                self._step_files.append(self._last_checkpoint_saved)
        self._save_last_checkpoint(trainer, candidates)
        self._drop_old_step_files(trainer)

    # ------------------------------------------------------------------ files
    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """Write ``filepath`` as a new file (a hard-linked name is unlinked first, never truncated)."""
        if trainer.is_global_zero and os.path.lexists(filepath) and not os.path.isdir(filepath):
            os.remove(filepath)
        super()._save_checkpoint(trainer, filepath)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        """``last.ckpt``: a hard link to this step's file when one was just written, else its own file."""
        if not self.save_last:
            return
        filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        if self._enable_version_counter:  # Lightning's: last-v1.ckpt, ... instead of a previous run's file
            version = self.STARTING_VERSION
            while self.file_exists(filepath, trainer) and filepath != self.last_model_path:
                filepath = self.format_checkpoint_name(
                    monitor_candidates, self.CHECKPOINT_NAME_LAST, ver=version
                )
                version += 1
        step_file = self._last_checkpoint_saved
        self.last_model_path = filepath  # set before saving: it is part of the saved state
        if step_file and self._last_global_step_saved == trainer.global_step and step_file != filepath:
            self._hard_link(trainer, step_file, filepath)
        else:
            self._save_checkpoint(trainer, filepath)

    @staticmethod
    def _hard_link(trainer: L.Trainer, target: str, linkpath: str) -> None:
        if trainer.is_global_zero:
            if os.path.lexists(linkpath):
                os.remove(linkpath)
            try:
                os.link(target, linkpath)
            except OSError as error:
                rank_zero_warn(
                    f"StepCheckpoint: cannot hard-link {linkpath} to {target} ({error}); copying it"
                )
                shutil.copyfile(target, linkpath)
        trainer.strategy.barrier()

    def _drop_old_step_files(self, trainer: L.Trainer) -> None:
        if self.keep_last_n is None:
            return
        while len(self._step_files) > self.keep_last_n:
            old = self._step_files.pop(0)
            if trainer.is_global_zero and os.path.isfile(old):
                self._remove_checkpoint(trainer, old)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "step_files": list(self._step_files)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._step_files = list(state_dict.get("step_files", []))
