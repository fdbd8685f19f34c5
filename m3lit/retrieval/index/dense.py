"""Dense index: exact top-k by chunked matrix products, or a faiss index for large corpora.

BGE-M3, arXiv:2402.03216 §3.2: s_dense = <e_q, e_p> (normalised CLS vectors, so cosine similarity).

Memory: the vectors live in one (N, D) array of ``dtype`` (float32 by default; float16 halves it, and
scores are always computed in float32). A search holds one (Q_block, chunk) float32 score block at a
time, ``block_elements`` elements at most. With ``faiss_factory`` (e.g. ``"Flat"``, ``"HNSW32"``,
``"IVF1024,Flat"``), search goes through ``faiss.index_factory(D, factory, METRIC_INNER_PRODUCT)``
instead; the array is kept as well, for exact re-scoring of candidates (hybrid and ``all`` modes). An
index that needs training (IVF, PQ) is trained on the first shard added.

>>> import numpy as np
>>> index = DenseIndex(2)
>>> index.add(np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32))
>>> r = index.search(np.array([[0.0, 1.0]], dtype=np.float32), k=2)
>>> r.indices.tolist(), r.scores.round(2)
([[2, 1]], array([[1. , 0.8]], dtype=float32))
"""

from __future__ import annotations

import numpy as np
import torch

from m3lit.retrieval.index.ranking import Ranking
from m3lit.scores import dense_scores, dense_scores_pairwise

__all__ = ["DenseIndex"]

#: Largest float32 score block (queries x documents) a search materialises at once (~256 MB).
BLOCK_ELEMENTS = 64 * 1024 * 1024
#: Bound on the gathered (pairs x D) float32 blocks of :meth:`DenseIndex.score` (~16 MB each).
PAIR_ELEMENTS = 4 * 1024 * 1024
#: Queries searched together; the document chunk is then ``max(k, BLOCK_ELEMENTS // QUERY_BLOCK)`` rows.
QUERY_BLOCK = 4096


class DenseIndex:
    """Exact inner-product top-k over (N, D) vectors added shard by shard.

    Args:
        dim: vector width D.
        capacity: number of documents that will be added, if known: the array is allocated once
            instead of grown by concatenation (which briefly needs twice the memory).
        dtype: storage dtype, ``"float32"`` or ``"float16"``.
        faiss_factory: a faiss ``index_factory`` string, or None for the exact chunked search.
        block_elements: bound on the (queries x documents) score block of the exact search.
    """

    def __init__(
        self,
        dim: int,
        *,
        capacity: int | None = None,
        dtype: str = "float32",
        faiss_factory: str | None = None,
        block_elements: int = BLOCK_ELEMENTS,
    ) -> None:
        if dtype not in ("float32", "float16"):
            raise ValueError(f"DenseIndex: dtype must be 'float32' or 'float16', got {dtype!r}")
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self.block_elements = block_elements
        self._vectors = np.empty((capacity or 0, dim), self.dtype)
        self._size = 0
        self._faiss = _make_faiss(dim, faiss_factory) if faiss_factory else None

    def __len__(self) -> int:
        return self._size

    @property
    def vectors(self) -> np.ndarray:
        """(N, D) stored vectors."""
        return self._vectors[: self._size]

    def add(self, vectors: np.ndarray) -> None:
        """Append (n, D) document vectors; their rows get the next n document indices."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"DenseIndex.add: expected (n, {self.dim}) vectors, got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError(
                f"DenseIndex.add: vectors for documents {self._size}..{self._size + len(vectors) - 1} are not finite"
            )
        end = self._size + len(vectors)
        if end > len(self._vectors):
            grown = np.empty((max(end, 2 * len(self._vectors)), self.dim), self.dtype)
            grown[: self._size] = self._vectors[: self._size]
            self._vectors = grown
        self._vectors[self._size : end] = vectors
        self._size = end
        if self._faiss is not None:
            batch = np.ascontiguousarray(vectors, dtype=np.float32)
            if not self._faiss.is_trained:
                self._faiss.train(batch)
            self._faiss.add(batch)

    def search(self, queries: np.ndarray, k: int) -> Ranking:
        """Top-k documents by inner product for (Q, D) ``queries``; exact unless a faiss factory says otherwise."""
        queries = self._check_queries(queries)
        k = min(k, self._size)
        if k <= 0:
            return Ranking.empty(len(queries))
        if self._faiss is not None:
            scores, indices = self._faiss.search(np.ascontiguousarray(queries, dtype=np.float32), k)
            return Ranking.from_candidates(indices, scores, k)
        q_block = min(len(queries), QUERY_BLOCK)
        rankings = [self._search_block(queries[s : s + q_block], k) for s in range(0, len(queries), q_block)]
        return Ranking(
            np.concatenate([r.indices for r in rankings]), np.concatenate([r.scores for r in rankings])
        )

    def score(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Exact s_dense of each query against its (Q, M) candidate documents (-1 = none) -> (Q, M) float32."""
        queries = self._check_queries(queries)
        candidates = np.asarray(candidates, dtype=np.int64)
        out = np.full(candidates.shape, -np.inf, np.float32)
        rows_per_block = max(1, PAIR_ELEMENTS // max(1, candidates.shape[1] * self.dim))
        for s in range(0, len(queries), rows_per_block):
            cand = candidates[s : s + rows_per_block]
            valid = cand >= 0
            q = torch.from_numpy(np.ascontiguousarray(queries[s : s + rows_per_block], dtype=np.float32))
            q = q.repeat_interleave(int(cand.shape[1]), 0)[
                torch.from_numpy(valid.reshape(-1))
            ]  # (n_valid, D)
            p = torch.from_numpy(self.vectors[cand[valid]].astype(np.float32))  # (n_valid, D)
            block = out[s : s + rows_per_block]
            block[valid] = dense_scores_pairwise(q, p).numpy()
        return out

    # ------------------------------------------------------------------ internals
    def _search_block(self, queries: np.ndarray, k: int) -> Ranking:
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))  # (Qb, D)
        chunk = max(k, self.block_elements // max(1, len(queries)))
        best = Ranking.empty(len(queries))
        for start in range(0, self._size, chunk):
            p = torch.from_numpy(self.vectors[start : start + chunk].astype(np.float32, copy=False))  # (C, D)
            block = dense_scores(q, p).numpy()  # (Qb, C)
            best = best.merge(Ranking.from_scores(block, k, offset=start), k)
        return best

    def _check_queries(self, queries: np.ndarray) -> np.ndarray:
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"DenseIndex: expected (Q, {self.dim}) queries, got {queries.shape}")
        return queries


def _make_faiss(dim: int, factory: str):
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("DenseIndex(faiss_factory=...) needs faiss: pip install 'm3lit[faiss]'") from err
    return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
