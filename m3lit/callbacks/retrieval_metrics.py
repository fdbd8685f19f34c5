"""``RetrievalMetrics``: evaluate the held-out retrieval split during and at the end of training.

Every ``every_n_steps`` optimizer steps, and once when training ends, the callback runs
:func:`m3lit.retrieval.evaluate_retrieval` on a BEIR-layout folder in the five modes (BGE-M3,
arXiv:2402.03216 §4: Dense, Sparse, Multi-vec, Dense+Sparse, All; plus BM25 at the end, as a reference
row) and logs ``<prefix>/<metric>/<mode>``, e.g. ``val/ndcg@10/all``.

Where the values go:

- ``pl_module.log_dict(..., logger=False)``: into ``trainer.callback_metrics``, so ``ModelCheckpoint`` /
  ``EarlyStopping`` can monitor any key (``monitor="val/ndcg@10/all", mode="max"``);
- ``logger.log_metrics(..., step=global_step)`` for every logger of the trainer (W&B, CSV, ...), at the
  step of the evaluation. (Lightning's own step logging would drop values logged on a step that is not a
  multiple of ``log_every_n_steps``; writing to the loggers directly never drops or duplicates them.)

Distributed training: the evaluation runs on global rank 0 only (other ranks wait), and its results
are broadcast (``trainer.strategy.broadcast``), so every rank logs the same values and a monitoring
``ModelCheckpoint`` takes the same decision everywhere. The values are also logged with
``sync_dist=True, reduce_fx="max"``: the max of identical numbers is that number, bit for bit. The
dataset is loaded on rank 0 at ``setup``; a loading error is broadcast and raised on every rank, so no
rank waits forever. Keep the held-out set small enough that one evaluation finishes well inside the
process group's timeout (30 minutes by default for NCCL).

The model is found at ``pl_module.<model_attr>`` (``M3LitModule.model``); ``encode_texts`` puts it in
eval mode and restores its training flag.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from m3lit.retrieval import (
    DEFAULT_METRICS,
    MODEL_MODES,
    RetrievalConfig,
    RetrievalDataset,
    evaluate_retrieval,
    load_beir,
)

__all__ = ["RetrievalMetrics"]

log = logging.getLogger(__name__)


class RetrievalMetrics(Callback):
    """Periodic retrieval evaluation of the model being trained.

    Args:
        data_dir: BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); None = the
            datamodule's demo held-out split (``trainer.datamodule.demo_paths.eval_dir`` when ``demo`` is on).
        split: qrels split to evaluate.
        every_n_steps: evaluate when ``global_step`` is a positive multiple of this; None or 0 = only at the end.
        at_train_end: evaluate once more when training ends (unless that step was just evaluated).
        modes: modes evaluated each time (default: the five model modes).
        bm25_at_end: add the BM25 reference row to the final evaluation.
        metrics: metric names, e.g. ``ndcg@10``, ``recall@100``, ``mrr@10``.
        retrieval: :class:`RetrievalConfig` or a dict of its fields (depths, weights, lengths).
        prefix: first part of the logged keys.
        model_attr: attribute of the LightningModule holding the ``M3Model``.
        unknown_qrels: ``"error"`` or ``"skip"`` for qrels rows naming unknown ids.
        progress: show encoding progress bars.
    """

    def __init__(
        self,
        data_dir: str | Path | None,
        *,
        split: str = "test",
        every_n_steps: int | None = 500,
        at_train_end: bool = True,
        modes: Sequence[str] = MODEL_MODES,
        bm25_at_end: bool = True,
        metrics: Sequence[str] = DEFAULT_METRICS,
        retrieval: RetrievalConfig | dict | None = None,
        prefix: str = "val",
        model_attr: str = "model",
        unknown_qrels: str = "error",
        progress: bool = False,
    ) -> None:
        super().__init__()
        if every_n_steps is not None and every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0 or None, got {every_n_steps}")
        self.data_dir = None if data_dir is None else str(data_dir)
        self.split = split
        self.every_n_steps = every_n_steps or 0
        self.at_train_end = at_train_end
        self.modes = list(modes)
        self.bm25_at_end = bm25_at_end
        self.metrics = list(metrics)
        self.retrieval = RetrievalConfig.from_mapping(retrieval)
        self.prefix = prefix
        self.model_attr = model_attr
        self.unknown_qrels = unknown_qrels
        self.progress = progress
        self._dataset: RetrievalDataset | None = None
        self._last_step = -1
        #: (global_step, {mode: {metric: value}}) of every evaluation, oldest first.
        self.history: list[tuple[int, dict[str, dict[str, float]]]] = []

    @property
    def last_results(self) -> dict[str, dict[str, float]] | None:
        """mode -> metric -> value of the latest evaluation (None before the first)."""
        return self.history[-1][1] if self.history else None

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self._dataset is not None:
            return
        error = None
        if trainer.is_global_zero:
            try:
                self.data_dir = self.data_dir or _demo_eval_dir(trainer)
                self._dataset = load_beir(self.data_dir, self.split, unknown_qrels=self.unknown_qrels)
            except (OSError, ValueError) as err:
                error = f"{type(err).__name__}: {err}"
        error = trainer.strategy.broadcast(error, src=0)
        if error is not None:
            raise RuntimeError(
                f"RetrievalMetrics could not load {self.data_dir} (split {self.split!r}): {error}"
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._evaluate_and_log(trainer, pl_module, self.modes)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.at_train_end or not _training_ends(trainer):
            return
        modes = self.modes + (["bm25"] if self.bm25_at_end and "bm25" not in self.modes else [])
        if trainer.global_step == self._last_step:  # just evaluated: only the BM25 row may be missing
            modes = [m for m in modes if m not in self.last_results]
            if not modes:
                return
        self._evaluate_and_log(trainer, pl_module, modes)

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self._last_step, "history": [[s, r] for s, r in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = int(state_dict.get("last_step", -1))
        self.history = [(int(s), r) for s, r in state_dict.get("history", [])]

    # ------------------------------------------------------------------ work
    def _evaluate_and_log(
        self, trainer: L.Trainer, pl_module: L.LightningModule, modes: Sequence[str]
    ) -> None:
        step = trainer.global_step
        results = None
        if trainer.is_global_zero:
            model = getattr(pl_module, self.model_attr)
            results = evaluate_retrieval(
                model,
                self._dataset,
                modes=modes,
                metrics=self.metrics,
                config=self.retrieval,
                device=pl_module.device,
                progress=self.progress,
            )
        results = trainer.strategy.broadcast(results, src=0)
        if step == self._last_step and self.history:  # same step: complete the earlier entry
            merged = {**self.history[-1][1], **results}
            self.history[-1] = (step, merged)
        else:
            self.history.append((step, results))
        self._last_step = step
        flat = {
            f"{self.prefix}/{metric}/{mode}": value
            for mode, row in results.items()
            for metric, value in row.items()
        }
        pl_module.log_dict(flat, logger=False, sync_dist=True, reduce_fx="max")
        for logger in trainer.loggers:
            logger.log_metrics(flat, step=step)
        if trainer.is_global_zero:
            summary = ", ".join(
                f"{mode} {row.get(self.metrics[0], float('nan')):.4f}" for mode, row in results.items()
            )
            log.info("step %d retrieval %s: %s", step, self.metrics[0], summary)


def _demo_eval_dir(trainer: L.Trainer) -> str:
    """The held-out BEIR split of the demo datamodule (``data_dir=None``)."""
    datamodule = getattr(trainer, "datamodule", None)
    if not getattr(datamodule, "demo", False):
        raise ValueError(
            "data_dir=None needs the demo datamodule (data.demo=true); pass data_dir=<BEIR folder>"
        )
    return str(datamodule.demo_paths.eval_dir)


def _training_ends(trainer: L.Trainer) -> bool:
    """True in the ``on_train_epoch_end`` of the last epoch (max_steps or max_epochs reached, or stopping)."""
    if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs:
        return True
    return bool(trainer.should_stop)
