"""Retrieval evaluation: indices for the five BGE-M3 modes, BM25, metrics, and BEIR loading.

BGE-M3, arXiv:2402.03216 §3.2 (scores) and §4 (the Dense / Sparse / Multi-vec / Dense+Sparse / All rows
of its tables). Entry point: :func:`evaluate_retrieval`; see :mod:`m3lit.retrieval.pipeline`.
"""

from __future__ import annotations

from m3lit.retrieval.beir import DatasetError, RetrievalDataset, load_beir, write_beir
from m3lit.retrieval.bm25 import BM25Index, bm25_tokenize
from m3lit.retrieval.colbert import ColbertStore
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.corpus import CorpusIndex, index_corpus
from m3lit.retrieval.dense import DenseIndex
from m3lit.retrieval.hybrid import fuse, union_candidates
from m3lit.retrieval.metrics import DEFAULT_METRICS, MetricResult, evaluate_ranking, parse_metric
from m3lit.retrieval.pipeline import (
    MODEL_MODES,
    MODES,
    RetrievalRun,
    evaluate_retrieval,
    retrieve,
    usable_modes,
)
from m3lit.retrieval.ranking import Ranking
from m3lit.retrieval.sparse import SparseIndex, sparse_matrix

__all__ = [
    "BM25Index",
    "ColbertStore",
    "CorpusIndex",
    "DEFAULT_METRICS",
    "DatasetError",
    "DenseIndex",
    "MODEL_MODES",
    "MODES",
    "MetricResult",
    "Ranking",
    "RetrievalConfig",
    "RetrievalDataset",
    "RetrievalRun",
    "SparseIndex",
    "bm25_tokenize",
    "evaluate_ranking",
    "evaluate_retrieval",
    "fuse",
    "index_corpus",
    "load_beir",
    "parse_metric",
    "retrieve",
    "sparse_matrix",
    "union_candidates",
    "usable_modes",
    "write_beir",
]
