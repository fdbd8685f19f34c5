"""Multi-vector (ColBERT) storage and MaxSim re-ranking of candidate lists.

BGE-M3, arXiv:2402.03216 §3.2: s_mul(q, p) = (1/N_q) sum_i max_j <E_q,i, E_p,j>. The scores come from
:func:`m3lit.scores.colbert_scores` on unpadded vectors (padding never enters a max), which is the
reference's stand-alone ``colbert_score``.

Storage (:class:`ColbertStore`): a compact ragged array. The token vectors of the stored documents are
concatenated into (T, Dc) blocks of ``dtype`` (float16 by default: 2 bytes per value), plus three (N,)
arrays locating each document (block, start row, length). Memory = total stored tokens x Dc x 2 bytes;
e.g. 10,000 passages of 128 tokens at Dc = 1024 take 2.6 GB, at Dc = 32 (tiny model) 82 MB. Whether the
whole corpus is kept, or only the re-ranking candidates are re-encoded, is decided by the pipeline
(``colbert_store`` in :class:`m3lit.retrieval.config.RetrievalConfig`).

>>> import numpy as np
>>> store = ColbertStore(2)
>>> store.add(np.array([0, 1]), [np.array([[1.0, 0.0]]), np.array([[0.6, 0.8], [0.0, 1.0]])])
>>> store.score([np.array([[0.0, 1.0]], np.float32)], np.array([[0, 1]])).round(2).tolist()
[[0.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from m3lit.scores import colbert_scores

__all__ = ["ColbertStore"]

#: Bound on the padded (candidates x tokens x Dc) float32 block built for one query (~32 MB).
CANDIDATE_ELEMENTS = 8 * 1024 * 1024


class ColbertStore:
    """Per-document token vectors in a ragged array, addressed by corpus row number.

    Args:
        dim: ColBERT vector width Dc.
        num_docs: corpus size N (document indices lie in [0, N)); grows if larger indices are added.
        dtype: storage dtype, ``"float16"`` (default) or ``"float32"``.
    """

    def __init__(self, dim: int, num_docs: int = 0, *, dtype: str = "float16") -> None:
        if dtype not in ("float32", "float16"):
            raise ValueError(f"ColbertStore: dtype must be 'float32' or 'float16', got {dtype!r}")
        self.dim = dim
        self.dtype = np.dtype(dtype)
        self._blocks: list[np.ndarray] = []
        self._block = np.full(num_docs, -1, np.int32)  # (N,) block of each document, -1 = not stored
        self._start = np.zeros(num_docs, np.int64)  # (N,) first row inside its block
        self._length = np.zeros(num_docs, np.int32)  # (N,) number of token vectors

    def __len__(self) -> int:
        """Number of stored documents."""
        return int((self._block >= 0).sum())

    @property
    def nbytes(self) -> int:
        return (
            sum(b.nbytes for b in self._blocks)
            + self._block.nbytes
            + self._start.nbytes
            + self._length.nbytes
        )

    def has(self, doc_indices: np.ndarray) -> np.ndarray:
        """(n,) bool: which of the given documents are stored."""
        doc_indices = np.asarray(doc_indices, dtype=np.int64)
        inside = (doc_indices >= 0) & (doc_indices < self._block.size)
        out = np.zeros(doc_indices.shape, bool)
        out[inside] = self._block[doc_indices[inside]] >= 0
        return out

    def add(self, doc_indices: np.ndarray, vectors: Sequence[np.ndarray]) -> None:
        """Store the (n_tokens - 1, Dc) vectors of the given documents (one block per call)."""
        doc_indices = np.asarray(doc_indices, dtype=np.int64)
        if doc_indices.shape != (len(vectors),):
            raise ValueError(f"ColbertStore.add: {doc_indices.shape} indices for {len(vectors)} documents")
        if doc_indices.size == 0:
            return
        if doc_indices.min() < 0:
            raise ValueError("ColbertStore.add: negative document index")
        for doc, v in zip(doc_indices, vectors, strict=True):
            if v.ndim != 2 or v.shape[1] != self.dim:
                raise ValueError(
                    f"ColbertStore.add: document {doc} has vectors {v.shape}, expected (n, {self.dim})"
                )
        if doc_indices.max() >= self._block.size:
            grow = int(doc_indices.max()) + 1 - self._block.size
            self._block = np.concatenate([self._block, np.full(grow, -1, np.int32)])
            self._start = np.concatenate([self._start, np.zeros(grow, np.int64)])
            self._length = np.concatenate([self._length, np.zeros(grow, np.int32)])
        lengths = np.array([len(v) for v in vectors], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        block = np.empty((int(lengths.sum()), self.dim), self.dtype)  # filled in place: no float32 copy
        for start, v in zip(starts, vectors, strict=True):
            block[start : start + len(v)] = v
        self._blocks.append(block)
        self._block[doc_indices] = len(self._blocks) - 1
        self._start[doc_indices] = starts
        self._length[doc_indices] = lengths

    def get(self, doc_index: int) -> np.ndarray:
        """(n_tokens - 1, Dc) vectors of one stored document."""
        block = int(self._block[doc_index]) if 0 <= doc_index < self._block.size else -1
        if block < 0:
            raise KeyError(f"ColbertStore: document {doc_index} is not stored")
        start = int(self._start[doc_index])
        return self._blocks[block][start : start + int(self._length[doc_index])]

    def score(
        self, queries: Sequence[np.ndarray], candidates: np.ndarray, device: torch.device | str | None = None
    ) -> np.ndarray:
        """MaxSim of each query's (Lq, Dc) vectors against its (Q, M) candidates (-1 = none) -> (Q, M) float32.

        Every valid candidate must be stored (KeyError otherwise). ``device`` runs the MaxSim there (e.g.
        the model's GPU); the vectors stay in host memory and travel one padded group at a time.
        """
        device = torch.device(device or "cpu")
        candidates = np.asarray(candidates, dtype=np.int64)
        if candidates.ndim != 2 or candidates.shape[0] != len(queries):
            raise ValueError(f"ColbertStore.score: candidates {candidates.shape} for {len(queries)} queries")
        out = np.full(candidates.shape, -np.inf, np.float32)
        for q, q_vecs in enumerate(queries):
            slots = np.flatnonzero(candidates[q] >= 0)
            if slots.size:
                out[q, slots] = self._score_one(np.asarray(q_vecs, np.float32), candidates[q, slots], device)
        return out

    def _score_one(self, q_vecs: np.ndarray, docs: np.ndarray, device: torch.device) -> np.ndarray:
        """MaxSim of one (Lq, Dc) query against the stored documents ``docs`` -> (n,) float32."""
        if not self.has(docs).all():
            raise KeyError(f"ColbertStore: documents {docs[~self.has(docs)].tolist()} are not stored")
        order = np.argsort(self._length[docs], kind="stable")  # groups of similar lengths: less padding
        docs, lengths = docs[order], self._length[docs[order]].astype(np.int64)
        q = torch.from_numpy(q_vecs)[None].to(device)  # (1, Lq, Dc)
        q_mask = torch.ones(q.shape[:2], dtype=torch.bool, device=device)
        scores = np.empty(len(docs), np.float32)
        group = max(1, CANDIDATE_ELEMENTS // max(1, int(lengths.max()) * self.dim))  # few, large calls
        for start in range(0, len(docs), group):
            chunk, n_tok = docs[start : start + group], lengths[start : start + group]
            longest = int(n_tok.max())
            p = np.zeros((len(chunk), longest, self.dim), np.float32)  # (C, Lp, Dc) padded candidates
            rows = np.repeat(np.arange(len(chunk)), n_tok)  # candidate of every token
            cols = np.arange(int(n_tok.sum())) - np.repeat(np.cumsum(n_tok) - n_tok, n_tok)  # position in it
            p[rows, cols] = self._gather(chunk)
            p_mask = torch.from_numpy(np.arange(longest)[None] < n_tok[:, None]).to(device)  # (C, Lp)
            p_vecs = torch.from_numpy(p).to(device)
            scores[start : start + group] = colbert_scores(q, q_mask, p_vecs, p_mask)[0].cpu().numpy()
        out = np.empty_like(scores)
        out[order] = scores  # back to the order of ``docs``
        return out

    def _gather(self, docs: np.ndarray) -> np.ndarray:
        """The token vectors of ``docs``, concatenated in order -> (sum of lengths, Dc)."""
        return np.concatenate([self.get(int(d)) for d in docs])
