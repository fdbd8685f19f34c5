"""Retrieval evaluation: indices for the five BGE-M3 modes, BM25, metrics, and BEIR loading.

BGE-M3, arXiv:2402.03216 §3.2 (scores) and §4 (the Dense / Sparse / Multi-vec / Dense+Sparse / All rows
of its tables), Dense+MCLS (App. B.2, Table 5). Entry point: :func:`evaluate_retrieval`; see :mod:`m3lit.retrieval.pipeline`.

One evaluation reads plan -> load -> index -> score -> report: :mod:`~m3lit.retrieval.options` (what is asked),
:mod:`~m3lit.retrieval.modes` (the plan), :mod:`~m3lit.retrieval.beir` (load), :mod:`~m3lit.retrieval.index`
(encode, index, search), :mod:`~m3lit.retrieval.pipeline` (rank each mode, score), :mod:`~m3lit.retrieval.report`
(results.json/.md/.png, provenance, significance); :mod:`~m3lit.retrieval.suite` runs it per task and language.

The package namespace holds what evaluating needs; the reports are imported from :mod:`m3lit.retrieval.report`
itself, so that the training callbacks, which evaluate through this package, never load them.
"""

from __future__ import annotations

from m3lit.retrieval.beir import RetrievalDataset, load_beir, write_beir
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.index.bm25 import BM25Index, bm25_tokenize
from m3lit.retrieval.index.colbert import ColbertStore
from m3lit.retrieval.index.corpus import CorpusIndex, encode_passages, index_corpus
from m3lit.retrieval.index.dense import DenseIndex
from m3lit.retrieval.index.hybrid import fuse, union_candidates
from m3lit.retrieval.index.ranking import Ranking
from m3lit.retrieval.index.sparse import SparseIndex, sparse_matrix
from m3lit.retrieval.metrics import DEFAULT_METRICS, MetricResult, evaluate_ranking, parse_metric
from m3lit.retrieval.modes import (
    DEFAULT_MODES,
    MODEL_MODES,
    MODES,
    RetrievalPlan,
    plan_retrieval,
    retrieval_depth,
    usable_modes,
)
from m3lit.retrieval.options import EvaluationOptions
from m3lit.retrieval.pipeline import RetrievalRun, drop_identical_ids, evaluate_retrieval, retrieve, run_plan
from m3lit.retrieval.trec import write_trec_run, write_trec_runs

__all__ = [
    "BM25Index",
    "ColbertStore",
    "CorpusIndex",
    "DEFAULT_METRICS",
    "DEFAULT_MODES",
    "DenseIndex",
    "EvaluationOptions",
    "MODEL_MODES",
    "MODES",
    "MetricResult",
    "Ranking",
    "RetrievalConfig",
    "RetrievalDataset",
    "RetrievalPlan",
    "RetrievalRun",
    "SparseIndex",
    "bm25_tokenize",
    "drop_identical_ids",
    "encode_passages",
    "evaluate_ranking",
    "evaluate_retrieval",
    "fuse",
    "index_corpus",
    "load_beir",
    "parse_metric",
    "plan_retrieval",
    "retrieval_depth",
    "retrieve",
    "run_plan",
    "sparse_matrix",
    "union_candidates",
    "usable_modes",
    "write_beir",
    "write_trec_run",
    "write_trec_runs",
]
