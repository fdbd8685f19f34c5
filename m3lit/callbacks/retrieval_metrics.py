"""``RetrievalMetrics``: evaluate the held-out retrieval split during and at the end of training.

Every ``every_n_steps`` optimizer steps, and once when training ends, the callback runs
:func:`m3lit.retrieval.evaluate_retrieval` on a BEIR-layout folder in the five modes (BGE-M3,
arXiv:2402.03216 §4: Dense, Sparse, Multi-vec, Dense+Sparse, All) and logs ``<prefix>/<metric>/<mode>``,
e.g. ``val/ndcg@10/all``. BM25, the lexical reference row (``bm25=True``), does not depend on the model:
it is computed ONCE, at the first evaluation, and the same values are re-logged with every evaluation,
so each logged step carries the reference next to the model's modes.

Modes and untrained heads: a model started from a plain encoder has fresh sparse/ColBERT heads
(``M3Model.heads_loaded`` False) and is evaluated in dense (and BM25) only. The training module marks the
heads trained at its first step of a stage that trains them
(:class:`~m3lit.training.lit_module.M3LitModule`), so every evaluation from then on has all five modes;
a dense-only stage 1 stays dense-only, as it should.

No step is evaluated twice: within the callback a step is evaluated at most once (the end-of-training
evaluation is skipped when the last periodic one was at the same step), and ``m3lit.train``'s final
evaluation (``results.json``) takes the callback's results for the final step through
:func:`reusable_results` when they cover the same dataset, split, metrics and settings,
evaluating only the modes the callback did not.

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
from collections.abc import Mapping, Sequence
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

__all__ = ["RetrievalMetrics", "reusable_results"]

log = logging.getLogger(__name__)


class RetrievalMetrics(Callback):
    """Periodic retrieval evaluation of the model being trained.

    Args:
        data_dir: BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); in a training run's
            config ``${evaluate.dataset_dir}``, also when a corpus fills it (:mod:`m3lit.config.corpus`).
        split: qrels split to evaluate.
        every_n_steps: evaluate when ``global_step`` is a positive multiple of this; None or 0 = only at the end.
        at_train_end: evaluate once more when training ends (unless that step was just evaluated).
        modes: model modes evaluated each time (default: the five).
        bm25: add the BM25 reference row, computed once and re-logged with every evaluation.
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
        bm25: bool = True,
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
        self.modes = [m for m in modes if m != "bm25"]
        self.bm25 = bm25 or "bm25" in modes
        self.metrics = list(metrics)
        self.retrieval = RetrievalConfig.from_mapping(retrieval)
        self.prefix = prefix
        self.model_attr = model_attr
        self.unknown_qrels = unknown_qrels
        self.progress = progress
        self._dataset: RetrievalDataset | None = None
        self._last_step = -1
        self._bm25: dict[str, float] | None = None  # metric -> value, computed at the first evaluation
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
                if self.data_dir is None:
                    raise ValueError(
                        "data_dir is not set: pass data_dir=<BEIR folder> (callbacks.retrieval_metrics.data_dir, "
                        "or evaluate.dataset_dir)"
                    )
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
            self._evaluate_and_log(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_train_end and _training_ends(trainer) and trainer.global_step != self._last_step:
            self._evaluate_and_log(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self._last_step, "history": [[s, r] for s, r in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = int(state_dict.get("last_step", -1))
        self.history = [(int(s), r) for s, r in state_dict.get("history", [])]
        self._bm25 = next((r["bm25"] for _, r in reversed(self.history) if "bm25" in r), None)

    # ------------------------------------------------------------------ reuse
    def results_for(
        self, step: int, dataset_dir: str | Path, split: str, options: Mapping[str, Any] | None = None
    ) -> dict[str, dict[str, float]] | None:
        """This callback's results of global step ``step`` if they are what ``evaluate_retrieval(model,
        dataset_dir, split=split, **options)`` would compute (same folder, split, metrics, retrieval settings and
        qrels policy; ``device`` and ``progress`` do not change values); else None. Used by ``m3lit.train``."""
        options = dict(options or {})
        if not self.history or self.history[-1][0] != step or self.data_dir is None:
            return None
        same = (
            Path(self.data_dir).resolve() == Path(dataset_dir).resolve()
            and self.split == split
            and list(options.get("metrics", DEFAULT_METRICS)) == self.metrics
            and RetrievalConfig.from_mapping(options.get("config")) == self.retrieval
            and options.get("unknown_qrels", "error") == self.unknown_qrels
        )
        return dict(self.history[-1][1]) if same else None

    # ------------------------------------------------------------------ work
    def _evaluate_and_log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        modes = self.modes + (["bm25"] if self.bm25 and self._bm25 is None else [])
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
        if self.bm25:
            self._bm25 = results.get("bm25", self._bm25)
            results["bm25"] = self._bm25
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


def reusable_results(
    callbacks: Sequence[Callback],
    step: int,
    dataset_dir: str | Path,
    split: str,
    options: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, float]] | None:
    """The first :meth:`RetrievalMetrics.results_for` match among ``callbacks`` (None if none matches)."""
    for callback in callbacks:
        if isinstance(callback, RetrievalMetrics):
            found = callback.results_for(step, dataset_dir, split, options)
            if found:
                return found
    return None


def _training_ends(trainer: L.Trainer) -> bool:
    """True in the ``on_train_epoch_end`` of the last epoch (max_steps or max_epochs reached, or stopping)."""
    if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs:
        return True
    return bool(trainer.should_stop)
