"""What one evaluation is asked to do: the options object that every evaluation entry point takes.

``python -m m3lit.evaluate`` (``configs/evaluate.yaml``) and ``train()`` (the ``evaluate`` block of
``configs/train.yaml``) spell their options differently; each turns them into one :class:`EvaluationOptions`
(:mod:`m3lit.evaluate`), and from there the way through is the same: one or several BEIR folders
(:func:`m3lit.retrieval.pipeline.evaluate_retrieval`) or a benchmark suite
(:func:`m3lit.retrieval.suite.run_suite`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from m3lit.model.device import default_device
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.metrics import DEFAULT_METRICS
from m3lit.retrieval.modes import DEFAULT_MODES

__all__ = ["EvaluationOptions"]


@dataclass(frozen=True)
class EvaluationOptions:
    """One evaluation's options. The commands fill every field from their configs (``configs/evaluate.yaml``,
    the ``evaluate`` block of ``configs/train.yaml``, where each option is documented); the defaults are a
    library call's: the paper's retrieval settings, every mode but Dense+MCLS, no progress bars.

    Attributes:
        data: BEIR folders (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``); empty with a suite.
        suite: a benchmark suite folder (``suite.json``) instead of ``data``.
        split: the qrels split to evaluate.
        modes: retrieval modes (:data:`m3lit.retrieval.modes.MODES`); ``bm25`` adds the BM25 reference.
        metrics: ``ndcg@K`` / ``recall@K`` / ``mrr@K`` (a suite's tasks name their own).
        retrieval: :class:`RetrievalConfig` fields (a suite layers each task's overrides on top).
        ignore_identical_ids: BEIR convention: drop a retrieved document whose id equals the query's.
        unknown_qrels: ``error`` or ``skip`` for qrels rows naming unknown ids.
        device: where to encode; None = the GPU when there is one, else the CPU.
        progress: progress bars while encoding.
        reference: suite only: ``{name_or_path, label, retrieval}`` of a released model evaluated dense-only.
        tune_fusion: suite only: fused weights chosen on each task's dev queries.
    """

    data: tuple[str, ...] = ()
    suite: str | None = None
    split: str = "test"
    modes: tuple[str, ...] = DEFAULT_MODES
    metrics: tuple[str, ...] = DEFAULT_METRICS
    retrieval: dict[str, Any] = field(default_factory=dict)
    ignore_identical_ids: bool = True
    unknown_qrels: str = "error"
    device: str | None = None
    progress: bool = False
    reference: dict[str, Any] | None = None
    tune_fusion: bool = False

    @property
    def config(self) -> RetrievalConfig:
        """The retrieval settings (:class:`RetrievalConfig`, the paper's defaults where unset)."""
        return RetrievalConfig.from_mapping(self.retrieval)

    @property
    def torch_device(self) -> torch.device:
        """:attr:`device`, or :func:`m3lit.model.device.default_device` when unset."""
        return torch.device(self.device or default_device())
