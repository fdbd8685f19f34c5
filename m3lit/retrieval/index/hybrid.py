"""Candidate unions and weighted re-scoring: the Dense+Sparse and All rows of the paper's tables.

BGE-M3, arXiv:2402.03216 §3.2: s_rank = w1 s_dense + w2 s_lex + w3 s_mul; §4 (footnotes of Tables 1-4):
Dense+Sparse = retrieve the top-1000 with each method and re-rank by the combined score; All = re-rank
with all three. Here every candidate gets its EXACT scores from the indices (the dense vector, the
sparse row, the ColBERT vectors), so a document found by only one of the two lists still gets both
terms. (FlagEmbedding's MKQA/MLDR scripts give such a document no score for the list that missed it;
spec §6.) The fused score is :func:`m3lit.scores.fused_scores`.

>>> import numpy as np
>>> a = Ranking(np.array([[3, 1]]), np.array([[0.9, 0.5]], np.float32))
>>> b = Ranking(np.array([[2, 3]]), np.array([[4.0, 1.0]], np.float32))
>>> union_candidates(a, b).tolist()
[[1, 2, 3]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from m3lit.retrieval.index.ranking import Ranking
from m3lit.scores import fused_scores

__all__ = ["FusionTerms", "union_candidates", "fuse"]


def union_candidates(*rankings: Ranking) -> np.ndarray:
    """Per query, the sorted union of the documents in several rankings -> (Q, M) int64, -1 padded."""
    if not rankings:
        raise ValueError("union_candidates: need at least one ranking")
    n_queries = rankings[0].num_queries
    if any(r.num_queries != n_queries for r in rankings):
        raise ValueError("union_candidates: rankings cover different numbers of queries")
    merged = np.concatenate([r.indices for r in rankings], axis=1)  # (Q, sum k)
    merged = np.sort(np.where(merged < 0, np.iinfo(np.int64).max, merged), axis=1)
    fresh = np.ones(merged.shape, bool)
    fresh[:, 1:] = merged[:, 1:] != merged[:, :-1]  # first occurrence of each document in a sorted row
    fresh &= merged != np.iinfo(np.int64).max
    width = int(fresh.sum(1).max()) if merged.size else 0
    out = np.full((n_queries, width), -1, np.int64)
    for q in range(n_queries):
        docs = merged[q][fresh[q]]
        out[q, : docs.size] = docs
    return out


def fuse(
    candidates: np.ndarray,
    dense: np.ndarray | None,
    sparse: np.ndarray | None,
    colbert: np.ndarray | None,
    weights: Sequence[float],
    k: int | None = None,
) -> Ranking:
    """Rank (Q, M) candidates by ``w_d * dense + w_s * sparse + w_c * colbert`` (None terms left out).

    Args:
        candidates: (Q, M) document indices, -1 = empty slot.
        dense, sparse, colbert: (Q, M) exact scores of the candidates, or None.
        weights: (w_dense, w_sparse, w_colbert).
        k: length of the returned lists (None keeps every candidate).
    """
    terms = [
        None if s is None else torch.from_numpy(np.asarray(s, np.float32)) for s in (dense, sparse, colbert)
    ]
    valid = torch.from_numpy(np.asarray(candidates) >= 0)
    # padding slots hold -inf in every term; zero them so a weight of 0 cannot turn them into nan
    terms = [None if t is None else t.masked_fill(~valid, 0.0) for t in terms]
    total = fused_scores(*terms, weights=tuple(weights)).masked_fill(~valid, float("-inf"))
    return Ranking.from_candidates(candidates, total.numpy(), k)


@dataclass(frozen=True)
class FusionTerms:
    """The candidates of a fused mode and their exact scores, kept so the mode can be re-ranked with other
    weights without searching again (:mod:`m3lit.retrieval.fusion_tuning`).

    Attributes:
        candidates: (Q, M) document indices, -1 = empty slot.
        dense, sparse, colbert: (Q, M) scores of the candidates; ``colbert`` is None for Dense+Sparse.
    """

    candidates: np.ndarray
    dense: np.ndarray
    sparse: np.ndarray
    colbert: np.ndarray | None = None

    def rank(self, weights: Sequence[float], k: int | None = None) -> Ranking:
        """:func:`fuse` with ``weights`` = (w_dense, w_sparse[, w_colbert]); a missing w_colbert is 0."""
        padded = (*weights, 0.0) if len(weights) == 2 else tuple(weights)
        return fuse(self.candidates, self.dense, self.sparse, self.colbert, padded, k)
