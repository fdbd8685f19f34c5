"""Sparse (lexical) inverted index over token ids, stored as scipy CSR matrices, with exact top-k.

BGE-M3, arXiv:2402.03216 §3.2: s_lex(q, p) = sum over tokens t shared by q and p of w_q,t * w_p,t, where
w is the max-pooled ReLU weight of a token id (special tokens dropped). With every text as a row vector
over the vocabulary, s_lex = q_vec . p_vec, so a block of queries is scored against the whole corpus by
one sparse-sparse product ``Q (b, V) @ P^T (V, N)``.

Storage: the documents as an (N, V) CSR matrix (rows = documents, used to re-score given candidates)
and its transpose, the (V, N) CSR matrix whose row t is the posting list of token t (the inverted
index). Each holds nnz float32 weights + nnz int32 indices, nnz = sum over documents of their distinct
tokens: about 8 bytes per (document, distinct token) pair, twice.

Only documents sharing at least one token with the query get a score; a result list is shorter than
``k`` when fewer documents match (no zero-score filler).

>>> import numpy as np
>>> index = SparseIndex(vocab_size=10)
>>> index.add([(np.array([4, 7]), np.array([1.0, 2.0], np.float32)), (np.array([5]), np.array([3.0], np.float32))])
>>> r = index.search(sparse_matrix([(np.array([7]), np.array([0.5], np.float32))], 10), k=5)
>>> r.indices.tolist(), r.scores.tolist()
([[0]], [[1.0]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from m3lit.retrieval.index.ranking import Ranking

__all__ = ["SparseIndex", "sparse_matrix"]

#: Queries scored together: the (b, N) result of one product has at most b * N non-zeros.
QUERY_BLOCK = 256
#: Candidate pairs re-scored together in :meth:`SparseIndex.score`.
PAIR_BLOCK = 65536


def sparse_matrix(vectors: Sequence[tuple[np.ndarray, np.ndarray]], vocab_size: int) -> sp.csr_matrix:
    """Stack per-text ``(token ids, weights)`` pairs into an (n, V) float32 CSR matrix.

    Args:
        vectors: one (ids int, weights float) pair per text, ids unique within a text (as
            :func:`m3lit.inference.encoding.encode_texts` returns them: max-pooled, special tokens dropped).
        vocab_size: V; every id must lie in [0, V).

    Raises:
        ValueError: naming the text (row) with repeated, out-of-range or misaligned ids, or non-finite
            or negative weights.
    """
    ids = [np.asarray(v[0]) for v in vectors]
    weights = [np.asarray(v[1]) for v in vectors]
    for row, (i, w) in enumerate(zip(ids, weights, strict=True)):
        if i.ndim != 1 or i.shape != w.shape:
            raise ValueError(
                f"sparse vector {row}: ids {i.shape} and weights {w.shape} must be equal 1-D shapes"
            )
    indptr = np.r_[0, np.cumsum([i.size for i in ids], dtype=np.int64)]
    cols = np.concatenate(ids).astype(np.int64, copy=False) if ids else np.zeros(0, np.int64)
    data = np.concatenate(weights).astype(np.float32, copy=False) if weights else np.zeros(0, np.float32)
    row_of = np.repeat(np.arange(len(ids)), np.diff(indptr))  # (nnz,) row of each entry, for the messages
    bad = np.flatnonzero((cols < 0) | (cols >= vocab_size))
    if bad.size:
        raise ValueError(f"sparse vector {row_of[bad[0]]}: token id outside [0, {vocab_size})")
    bad = np.flatnonzero(~np.isfinite(data) | (data < 0))
    if bad.size:
        raise ValueError(f"sparse vector {row_of[bad[0]]}: weights must be finite and >= 0")
    matrix = sp.csr_matrix((data, cols, indptr), shape=(len(vectors), vocab_size), dtype=np.float32)
    if not matrix.has_canonical_format:  # unsorted or repeated ids; sorting each row (in C) tells which
        matrix.sort_indices()
        repeat = (np.diff(matrix.indices) == 0) & (np.diff(row_of) == 0)  # row_of is unchanged by the sort
        if repeat.any():
            raise ValueError(
                f"sparse vector {row_of[np.argmax(repeat)]}: repeated token ids (max-pool them first)"
            )
        matrix.has_canonical_format = True
    matrix.eliminate_zeros()  # a zero weight is no posting
    return matrix


class SparseIndex:
    """Exact lexical top-k over documents added shard by shard.

    Args:
        vocab_size: V, the number of token ids (the encoder's vocabulary size).
    """

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self._shards: list[sp.csr_matrix] = []
        self._docs: sp.csr_matrix | None = None
        self._postings: sp.csr_matrix | None = None

    def __len__(self) -> int:
        return sum(s.shape[0] for s in self._shards) if self._docs is None else self._docs.shape[0]

    def add(self, vectors: Sequence[tuple[np.ndarray, np.ndarray]] | sp.spmatrix) -> None:
        """Append documents: ``(ids, weights)`` pairs or an (n, V) sparse matrix."""
        matrix = vectors if sp.issparse(vectors) else sparse_matrix(vectors, self.vocab_size)
        if matrix.shape[1] != self.vocab_size:
            raise ValueError(
                f"SparseIndex.add: matrix has {matrix.shape[1]} columns, vocab_size is {self.vocab_size}"
            )
        if self._docs is not None:
            self._shards = [self._docs]
            self._docs = self._postings = None
        self._shards.append(sp.csr_matrix(matrix, dtype=np.float32))

    @property
    def documents(self) -> sp.csr_matrix:
        """(N, V) document-term matrix."""
        self._finalize()
        return self._docs

    def search(self, queries: sp.spmatrix, k: int, *, min_score: float = 0.0) -> Ranking:
        """Top-k documents with score > ``min_score`` for a (Q, V) sparse query matrix."""
        queries = self._check_queries(queries)
        self._finalize()
        parts = []
        for start in range(0, queries.shape[0], QUERY_BLOCK):
            block = (
                queries[start : start + QUERY_BLOCK] @ self._postings
            ).tocsr()  # (b, N) scores of matching docs
            block.sort_indices()  # row positions in document order, so position ties break by document index
            parts.append(_csr_topk(block, k, min_score))
        if not parts:
            return Ranking.empty(0)
        width = max(p.width for p in parts)
        return Ranking(
            np.concatenate(
                [np.pad(p.indices, ((0, 0), (0, width - p.width)), constant_values=-1) for p in parts]
            ),
            np.concatenate(
                [np.pad(p.scores, ((0, 0), (0, width - p.width)), constant_values=-np.inf) for p in parts]
            ),
        )

    def score(self, queries: sp.spmatrix, candidates: np.ndarray) -> np.ndarray:
        """Exact s_lex of each query against its (Q, M) candidate documents (-1 = none) -> (Q, M) float32."""
        queries = self._check_queries(queries)
        self._finalize()
        candidates = np.asarray(candidates, dtype=np.int64)
        out = np.full(candidates.shape, -np.inf, np.float32)
        q_rows, slots = np.nonzero(candidates >= 0)  # every valid (query, slot) pair, row-major
        for s in range(0, q_rows.size, PAIR_BLOCK):
            qr, sl = q_rows[s : s + PAIR_BLOCK], slots[s : s + PAIR_BLOCK]
            docs = self._docs[candidates[qr, sl]]  # (n, V) one document per pair
            out[qr, sl] = np.asarray(docs.multiply(queries[qr]).sum(1)).ravel()
        return out

    # ------------------------------------------------------------------ internals
    def _finalize(self) -> None:
        if self._docs is None:
            shards = self._shards or [sp.csr_matrix((0, self.vocab_size), dtype=np.float32)]
            self._docs = sp.vstack(shards, format="csr", dtype=np.float32)
            self._postings = self._docs.T.tocsr()  # (V, N): row t = posting list of token t
            self._shards = []

    def _check_queries(self, queries: sp.spmatrix) -> sp.csr_matrix:
        if not sp.issparse(queries) or queries.shape[1] != self.vocab_size:
            raise ValueError(f"SparseIndex: queries must be a sparse (Q, {self.vocab_size}) matrix")
        return sp.csr_matrix(queries, dtype=np.float32)


def _csr_topk(block: sp.csr_matrix, k: int, min_score: float) -> Ranking:
    """Top-k of each row of a (b, N) CSR score matrix among its stored entries > ``min_score``."""
    rows_idx, rows_val = [], []
    for r in range(block.shape[0]):
        lo, hi = block.indptr[r], block.indptr[r + 1]
        idx, val = block.indices[lo:hi].astype(np.int64), block.data[lo:hi]
        keep = val > min_score
        idx, val = idx[keep], val[keep]
        if idx.size > k:
            top = Ranking.from_scores(val[None], k)  # positions inside this row; ties -> lower position
            idx, val = idx[top.indices[0]], val[top.indices[0]]
        rows_idx.append(idx)
        rows_val.append(val)
    width = max((i.size for i in rows_idx), default=0)
    indices = np.full((block.shape[0], width), -1, np.int64)
    scores = np.full((block.shape[0], width), -np.inf, np.float32)
    for r, (idx, val) in enumerate(zip(rows_idx, rows_val, strict=True)):
        indices[r, : idx.size], scores[r, : idx.size] = idx, val
    return Ranking.from_candidates(indices, scores)
