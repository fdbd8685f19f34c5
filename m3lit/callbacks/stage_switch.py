"""``StageSwitch``: move the training stage (and the data source) at configured global steps.

BGE-M3, arXiv:2402.03216 App. B.1: stage 1 (dense only, pairs) -> stage 2 (unified, labelled data) ->
self-knowledge distillation after a warm-up. A schedule such as::

    {0: {stage: dense, source: pairs}, 2000: {stage: unified, source: labelled}, 6000: unified_self_distill}

or, with head sets (:mod:`m3lit.training.stages`)::

    {0: {heads: [dense, sparse], source: labelled}, 1000: {heads: [dense, sparse], self_distill: true}}

is validated when the callback is built (:func:`~m3lit.training.stages.parse_schedule`). The stage of
global step k is that of the last entry with step <= k; it is written to ``pl_module.stage`` before step
k's training step, together with the index of that entry (``pl_module.stage_index``, logged as
``train/stage``). A source is switched through ``datamodule.set_source`` at the end of step k-1, i.e.
before step k's batch is built, so step k already draws from the new source. On resume the stage and
source are recomputed from the restored global step (the checkpointed state says where the run was;
a changed schedule is reported).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from m3lit.training.stages import ScheduleEntry, parse_schedule

__all__ = ["StageSwitch"]

log = logging.getLogger(__name__)


class StageSwitch(Callback):
    """Switch ``pl_module.stage`` and ``datamodule.set_source`` on a ``{step: stage}`` schedule.

    Args:
        schedule: ``{step: stage}``, ``{step: {stage: STAGE, source: NAME}}`` or ``{step: {heads: [...],
            self_distill: BOOL, source: NAME}}``; must contain step 0. Stages: the presets ``dense``, ``unified``,
            ``unified_self_distill`` or any head set; sources: the DataModule's (``pairs``, ``labelled``).
    """

    def __init__(self, schedule: Mapping[Any, Any]) -> None:
        self.entries: list[ScheduleEntry] = parse_schedule(schedule)
        self.stage: str | None = None  # stage applied last
        self.source: str | None = None  # source applied last (None: never switched by us)
        self.history: list[tuple[int, str, str | None]] = []  # (step, stage, source) of every switch
        self._restored: dict | None = None

    # ------------------------------------------------------------------ schedule lookup
    def index_at(self, step: int) -> int:
        """Index (0-based, in step order) of the schedule entry that is active at global step ``step``."""
        return [i for i, e in enumerate(self.entries) if e.step <= step][-1]

    def stage_at(self, step: int) -> str:
        """Stage of global step ``step``."""
        return self.entries[self.index_at(step)].stage

    def source_at(self, step: int) -> str | None:
        """Data source of global step ``step`` (the last one named at or before it), or None."""
        named = [e.source for e in self.entries if e.step <= step and e.source is not None]
        return named[-1] if named else None

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "stage"):
            raise TypeError(
                f"StageSwitch needs a LightningModule with a `stage` attribute, got {type(pl_module).__name__}"
            )
        sources = {e.source for e in self.entries if e.source is not None}
        datamodule = trainer.datamodule
        if sources and not hasattr(datamodule, "set_source"):
            raise TypeError(
                f"StageSwitch schedule switches data sources {sorted(sources)} but the datamodule has no set_source()"
            )
        max_steps = trainer.max_steps
        late = [
            e.step for e in self.entries if max_steps is not None and max_steps >= 0 and e.step >= max_steps
        ]
        if late and not trainer.fast_dev_run:
            rank_zero_warn(
                f"StageSwitch: entries at steps {late} are never reached (trainer.max_steps={max_steps})"
            )
        if self._restored is not None:
            old = self._restored.get("schedule")
            if old is not None and old != self._schedule_state():
                rank_zero_warn(
                    f"StageSwitch: the schedule differs from the checkpoint's ({old}); using the new one"
                )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer, pl_module, trainer.global_step, start=True)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._apply(trainer, pl_module, trainer.global_step, source=False)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._apply(trainer, pl_module, trainer.global_step, stage=False)  # next step's source

    def _apply(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        step: int,
        *,
        stage: bool = True,
        source: bool = True,
        start: bool = False,
    ) -> None:
        """Set the stage (and schedule index) and the source of ``step``; report what changed.

        At the start of training (``start``) the module's stage is the configured default, not one that ran,
        so the message names only the stage and source the run starts in.
        """
        new_stage, new_source = self.stage_at(step), self.source_at(step)
        old_source = getattr(trainer.datamodule, "source", None)
        switched = (stage and pl_module.stage != new_stage) or (
            source and new_source is not None and old_source != new_source
        )
        changed = []
        if stage and (start or pl_module.stage != new_stage):
            changed.append(f"stage {new_stage}" if start else f"stage {pl_module.stage} -> {new_stage}")
            pl_module.stage = new_stage
        if stage:
            self.stage = new_stage
            if hasattr(pl_module, "stage_index"):
                pl_module.stage_index = self.index_at(step)
        datamodule = trainer.datamodule
        if source and new_source is not None and (start or old_source != new_source):
            changed.append(
                f"data source {new_source}" if start else f"data source {old_source} -> {new_source}"
            )
            if old_source != new_source:
                datamodule.set_source(new_source)
        if source and new_source is not None:
            self.source = new_source
        if switched or (start and not self.history):
            row = (step, self.stage_at(step), new_source)
            if not self.history or self.history[-1] != row:  # a switch changes source and stage: one row
                self.history.append(row)
        if changed:
            where = "starts at" if start else "at"
            rank_zero_info(f"StageSwitch {where} global step {step}: {'; '.join(changed)}")

    # ------------------------------------------------------------------ checkpoint
    def _schedule_state(self) -> list[list]:
        return [[e.step, e.stage, e.source] for e in self.entries]

    def state_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "source": self.source,
            "history": [list(h) for h in self.history],
            "schedule": self._schedule_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)
        self.stage = state_dict.get("stage")
        self.source = state_dict.get("source")
        self.history = [tuple(h) for h in state_dict.get("history", [])]
