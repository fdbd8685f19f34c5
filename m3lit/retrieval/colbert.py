"""Multi-vector (ColBERT) storage and MaxSim re-ranking of candidate lists.

BGE-M3, arXiv:2402.03216 §3.2: s_mul(q, p) = (1/N_q) sum_i max_j <E_q,i, E_p,j>, on unpadded vectors
(the reference's stand-alone ``colbert_score``; equal to :func:`m3lit.scores.colbert_scores`). Re-ranking
is padding-free: each query's candidates are laid end to end, one GEMM scores every candidate token and a
segment max per candidate replaces the max over a padded block (:meth:`ColbertStore.score`).

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

__all__ = ["ColbertStore", "segment_maxsim"]

#: Bound on the candidate token vectors gathered for one batched GEMM (rows x max(Dc, Lq) float32 values,
#: ~32 MB), unless one query's piece alone is larger (by at most one candidate).
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
        the model's GPU); the vectors stay in host memory and travel one gathered batch at a time.

        Padding-free per candidate: a query's candidates are laid end to end in one (T, Dc) piece (T = the
        sum of their lengths; pieces of at most ~``CANDIDATE_ELEMENTS / Dc`` rows plus one candidate), and
        pieces of similar T are batched into one GEMM and one segment max (:func:`segment_maxsim`): a few
        large tensor operations instead of operations over candidates padded to the longest one.
        """
        device = torch.device(device or "cpu")
        candidates = np.asarray(candidates, dtype=np.int64)
        if candidates.ndim != 2 or candidates.shape[0] != len(queries):
            raise ValueError(f"ColbertStore.score: candidates {candidates.shape} for {len(queries)} queries")
        query, slot = np.nonzero(candidates >= 0)  # every (query, candidate slot) pair
        docs = candidates[query, slot]
        if not self.has(docs).all():
            missing = np.unique(docs[~self.has(docs)]).tolist()
            raise KeyError(f"ColbertStore: documents {missing} are not stored")
        out = np.full(candidates.shape, -np.inf, np.float32)
        if docs.size == 0:
            return out
        order = np.lexsort((self._start[docs], self._block[docs], query))  # by query, then storage order
        query, slot, docs = query[order], slot[order], docs[order]
        widest = max(self.dim, *(len(queries[q]) for q in np.unique(query)))  # (T, Dc) in, (T, Lq) out
        rows_cap = max(1, CANDIDATE_ELEMENTS // widest)
        pieces = _pieces(query, self._length[docs].astype(np.int64), rows_cap)  # (P + 1,) pair boundaries
        rows = np.add.reduceat(self._length[docs].astype(np.int64), pieces[:-1])  # (P,) rows of each piece
        batches = _batches(rows, rows_cap)
        buffer = torch.empty(max(len(b) * int(rows[b].max()) for b in batches), self.dim)  # gather target
        for batch in batches:
            pairs = [np.arange(pieces[i], pieces[i + 1]) for i in batch]
            q_vecs = [np.asarray(queries[int(query[x[0]])], np.float32) for x in pairs]
            sums = self._score_batch(q_vecs, [docs[x] for x in pairs], int(rows[batch].max()), buffer, device)
            x = np.concatenate(pairs)
            out[query[x], slot[x]] = sums / np.repeat(
                [max(1, len(v)) for v in q_vecs], [len(p) for p in pairs]
            )
        return out

    def _score_batch(
        self, q_vecs: list[np.ndarray], docs: list[np.ndarray], width: int, buffer: torch.Tensor, device
    ) -> np.ndarray:
        """Sum over query tokens of MaxSim's max, for G queries (Lq_g, Dc) and their ``docs[g]`` -> (sum n_g,)."""
        q = np.zeros((len(q_vecs), max(len(v) for v in q_vecs), self.dim), np.float32)  # (G, Lq_max, Dc)
        for g, v in enumerate(q_vecs):
            q[g, : len(v)] = v  # zero rows: their maxima are 0 and add 0 to the sums
        lengths = [self._length[d].astype(np.int64) for d in docs]
        segments = np.concatenate([np.r_[n, width - n.sum()] for n in lengths])  # + each piece's padding
        p = self._gather(docs, width, buffer).to(device)  # (G, width, Dc)
        sums = segment_maxsim(torch.from_numpy(q).to(device), p, segments).sum(1).cpu().numpy()
        padding = np.cumsum([len(n) + 1 for n in lengths]) - 1
        return np.delete(sums, padding)

    def _gather(self, docs: list[np.ndarray], width: int, buffer: torch.Tensor) -> torch.Tensor:
        """The float32 vectors of each ``docs[g]`` end to end, padded to ``width`` rows -> (G, width, Dc).

        Written into ``buffer`` (>= G x width rows). Padding rows hold copies of a stored row: they are
        segments of their own, whose maxima are dropped.
        """
        out = buffer[: len(docs) * width]
        flat = np.concatenate(docs)
        lengths = self._length[flat].astype(np.int64)
        if not lengths.any():
            return out.zero_().view(len(docs), width, self.dim)
        ends = np.cumsum(lengths)
        per_piece = [int(self._length[d].sum()) for d in docs]
        dest = np.concatenate([g * width + np.arange(n) for g, n in enumerate(per_piece)])  # (T,) row in out
        pad = flat[np.argmax(lengths > 0)]  # padding copies this document's first row
        block = np.full(len(out), self._block[pad], np.int64)  # (G * width,) source block and row
        row = np.full(len(out), self._start[pad], np.int64)
        block[dest] = np.repeat(self._block[flat], lengths)
        row[dest] = np.repeat(self._start[flat] - (ends - lengths), lengths) + np.arange(int(ends[-1]))
        used = np.unique(block).tolist()
        for b in used:
            src = torch.from_numpy(self._blocks[b])
            if len(used) == 1 and src.dtype == out.dtype:
                torch.index_select(src, 0, torch.from_numpy(row), out=out)  # one block: straight in
            elif len(used) == 1:
                out.copy_(src.index_select(0, torch.from_numpy(row)))  # float16 storage: cast on the copy
            else:
                sel = np.flatnonzero(block == b)
                rows = src.index_select(0, torch.from_numpy(row[sel])).to(out.dtype)
                out.index_copy_(0, torch.from_numpy(sel), rows)
        return out.view(len(docs), width, self.dim)


def _pieces(query: np.ndarray, lengths: np.ndarray, cap: int) -> np.ndarray:
    """Split (query-sorted) pairs into pieces: one query each, starting every ``cap`` rows -> (P + 1,) bounds."""
    ends = np.cumsum(lengths)
    new_query = np.r_[True, query[1:] != query[:-1]]
    first_row = np.maximum.accumulate(np.where(new_query, ends - lengths, 0))  # each pair's query's start
    chunk = (ends - lengths - first_row) // cap
    new_piece = new_query | np.r_[False, chunk[1:] != chunk[:-1]]
    return np.r_[np.flatnonzero(new_piece), len(query)]


def _batches(rows: np.ndarray, cap: int) -> list[np.ndarray]:
    """Group pieces of ``rows`` rows so that (pieces x their largest rows) <= cap, or one piece alone.

    Pieces go by increasing size, so one batch's pieces have similar sizes: little padding.
    """
    out, batch = [], []
    order = np.argsort(rows, kind="stable").tolist()
    for i, p in enumerate(order):
        batch.append(p)
        if i + 1 == len(order) or (len(batch) + 1) * int(rows[order[i + 1]]) > cap:
            out.append(np.array(batch))
            batch = []
    return out


def segment_maxsim(q: torch.Tensor, p: torch.Tensor, segments: np.ndarray) -> torch.Tensor:
    """Max similarity of G queries (G, Lq, Dc) over row segments of p (G, T, Dc) -> (S, Lq).

    ``segments`` (S,) lengths split the G x T rows in order (query g's rows into its own segments):
    best[s, i] = max_{j in segment s} <q_g,i, p_j>, the inner max of MaxSim (arXiv:2402.03216 §3.2;
    s_mul = mean_i best[s, i]). One batched GEMM, then one segment max; an empty segment gives 0.
    """
    sim = torch.bmm(p, q.transpose(1, 2)).reshape(p.shape[0] * p.shape[1], q.shape[1])  # (G * T, Lq)
    lengths = torch.from_numpy(segments).to(sim.device)
    best = torch.segment_reduce(sim, "max", lengths=lengths, axis=0)  # (S, Lq)
    return best.masked_fill_((lengths == 0)[:, None], 0)  # an empty segment's max is -inf
