"""Ranked result lists and the deterministic top-k helpers every index shares.

A :class:`Ranking` holds, per query, the document indices (row numbers in the corpus) and their scores,
best first. Rows are padded to a common width with index ``-1`` and score ``-inf``; a sparse or BM25 list
is shorter than ``k`` when fewer documents share a token with the query.

Order is deterministic: score descending, then document index ascending, also for ties at the cut-off
and across the chunks of a chunked search (every merge re-sorts by (score, index)).

>>> import numpy as np
>>> r = Ranking.from_scores(np.array([[0.1, 0.9, 0.5, 0.9]]), k=3)   # tie 0.9: lower index first
>>> r.indices.tolist(), r.scores
([[1, 3, 2]], array([[0.9, 0.9, 0.5]], dtype=float32))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Ranking", "sort_rows"]


def sort_rows(indices: np.ndarray, scores: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sort each row by (score desc, index asc), padding (-1 / -inf) last, and keep the first ``k`` columns.

    Args:
        indices: (Q, M) int document indices, -1 for empty slots.
        scores: (Q, M) float scores aligned with ``indices``.
        k: columns to keep (None keeps all).

    Returns:
        (Q, min(k, M)) int64 indices and float32 scores.
    """
    indices = np.asarray(indices, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    if indices.shape != scores.shape or indices.ndim != 2:
        raise ValueError(
            f"sort_rows: indices {indices.shape} and scores {scores.shape} must be the same 2-D shape"
        )
    scores = np.where(indices < 0, -np.inf, scores).astype(np.float32)
    tiebreak = np.where(indices < 0, np.iinfo(np.int64).max, indices)
    order = np.lexsort((tiebreak, -scores), axis=-1)  # last key is primary: score desc, then index asc
    indices = np.take_along_axis(indices, order, axis=-1)
    scores = np.take_along_axis(scores, order, axis=-1)
    if k is not None:
        indices, scores = indices[:, :k], scores[:, :k]
    return indices, scores


@dataclass
class Ranking:
    """Top-k lists for Q queries.

    Attributes:
        indices: (Q, k) int64 corpus row numbers, best first; -1 pads a short list.
        scores: (Q, k) float32 scores aligned with ``indices``; -inf on padding.
    """

    indices: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.indices.shape != self.scores.shape or self.indices.ndim != 2:
            raise ValueError(
                f"Ranking: indices {self.indices.shape} and scores {self.scores.shape} must match (Q, k)"
            )

    @property
    def num_queries(self) -> int:
        return self.indices.shape[0]

    @property
    def width(self) -> int:
        return self.indices.shape[1]

    def row(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        """The valid (index, score) entries of query ``q``, best first."""
        keep = self.indices[q] >= 0
        return self.indices[q][keep], self.scores[q][keep]

    def truncate(self, k: int) -> Ranking:
        """The first ``k`` entries of every list (a top-k list's prefix is the top-k' list)."""
        return Ranking(self.indices[:, :k], self.scores[:, :k])

    @classmethod
    def empty(cls, num_queries: int) -> Ranking:
        return cls(np.full((num_queries, 0), -1, np.int64), np.full((num_queries, 0), -np.inf, np.float32))

    @classmethod
    def from_candidates(cls, indices: np.ndarray, scores: np.ndarray, k: int | None = None) -> Ranking:
        """Sort (Q, M) candidate lists by score (padding -1 last) and keep the top ``k``."""
        return cls(*sort_rows(indices, scores, k))

    @classmethod
    def from_scores(cls, scores: np.ndarray, k: int, offset: int = 0) -> Ranking:
        """Exact top-k of a full (Q, N) score matrix; column j is document ``offset + j``.

        Ties at the k-th score keep the lowest document indices (every tied column is considered).
        """
        scores = np.asarray(scores, dtype=np.float32)
        n_docs = scores.shape[1]
        k = min(k, n_docs)
        if k <= 0:
            return cls.empty(scores.shape[0])
        if k == n_docs:
            return cls.from_candidates(np.broadcast_to(np.arange(n_docs) + offset, scores.shape), scores, k)
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (Q, k) unordered top-k columns
        kth = np.take_along_axis(scores, part, 1).min(1, keepdims=True)  # (Q, 1)
        n_tied = (scores >= kth).sum(1)  # (Q,) > k where argpartition cut inside a block of ties
        if (n_tied == k).all():
            return cls.from_candidates(part + offset, np.take_along_axis(scores, part, 1), k)
        width = int(n_tied.max())
        cand = np.full((scores.shape[0], width), -1, np.int64)
        for q in range(scores.shape[0]):
            cols = np.flatnonzero(scores[q] >= kth[q, 0])
            cand[q, : cols.size] = cols
        cand_scores = np.take_along_axis(scores, np.maximum(cand, 0), 1)
        cand = np.where(cand >= 0, cand + offset, -1)
        return cls.from_candidates(cand, cand_scores, k)

    def merge(self, other: Ranking, k: int) -> Ranking:
        """Top-k of the union of two rankings over disjoint document sets (chunked search)."""
        return Ranking.from_candidates(
            np.concatenate([self.indices, other.indices], 1),
            np.concatenate([self.scores, other.scores], 1),
            k,
        )
