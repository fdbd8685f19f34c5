"""Multi-vector (ColBERT) storage and MaxSim re-ranking of candidate lists.

BGE-M3, arXiv:2402.03216 §3.2: s_mul(q, p) = (1/N_q) sum_i max_j <E_q,i, E_p,j>, on unpadded vectors
(the reference's stand-alone ``colbert_score``; equal to :func:`m3lit.scores.colbert_scores`).

Re-ranking is document-major and padding-free (:meth:`ColbertStore.score`): a document that is a candidate
of several queries is read once, as one contiguous run of its stored rows, against the query tokens of all
those queries stacked together; one batched GEMM scores a group of such (document, query-token chunk)
items of similar length, and the max over the document's rows needs no mask (a document shorter than its
group's longest is padded with copies of its own last row, which cannot change a max). Then the per-token
maxima are summed per (query, document) pair. Compared with gathering every query's candidates (the same
document copied once per query that retrieved it), this moves far fewer bytes and feeds the GEMM a wide
query-token side.

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

__all__ = ["ColbertStore"]

#: Bound on one batched GEMM's similarity block on CPU (items x query-token chunk x longest document rows,
#: float32 values), unless one item alone is larger: 1M elements = 4 MB, so that each thread's half of the
#: block and its max stay in a core's L2 cache (8M-element blocks were measurably slower on a 2-core Xeon
#: with 2 MB of L2 per core).
CANDIDATE_ELEMENTS = 1024 * 1024
#: The bound on an accelerator (``device`` of :meth:`ColbertStore.score`), where larger GEMMs pay: 128 MB.
DEVICE_CANDIDATE_ELEMENTS = 32 * 1024 * 1024
#: Query-token chunk sizes tried per call; the largest whose padding stays under ``_CHUNK_WASTE`` is used.
_CHUNK_SIZES = (128, 64, 32, 16, 8)
_CHUNK_WASTE = 0.25


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

        Every valid candidate must be stored (KeyError otherwise); a pair with no vectors on one side
        scores 0. ``device`` runs the GEMMs there (e.g. the model's GPU); the vectors stay in host memory
        and travel one group at a time. Method: see the module docstring.
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
        q_len = np.array([len(v) for v in queries], np.int64)
        empty = (q_len[query] == 0) | (self._length[docs] == 0)
        out[query[empty], slot[empty]] = 0.0
        query, slot, docs = query[~empty], slot[~empty], docs[~empty]
        if docs.size == 0:
            return out
        order = np.lexsort((query, docs, self._length[docs]))  # by document length, document, query
        query, slot, docs = query[order], slot[order], docs[order]
        q_flat = torch.from_numpy(np.concatenate([np.asarray(v, np.float32) for v in queries if len(v)]))
        q_start = np.r_[0, np.cumsum(q_len)[:-1]]
        n_tok = q_len[query]  # (pairs,) query tokens of each pair
        pair_start = np.r_[0, np.cumsum(n_tok)[:-1]]  # first flat token of each pair
        token_row = np.repeat(q_start[query] - pair_start, n_tok) + np.arange(
            int(n_tok.sum())
        )  # (T,) in q_flat
        maxima = self._document_major_maxima(q_flat, token_row, np.repeat(docs, n_tok), device)  # (T,)
        out[query, slot] = np.add.reduceat(maxima, pair_start) / n_tok
        return out

    def _document_major_maxima(
        self, q_flat: torch.Tensor, token_row: np.ndarray, token_doc: np.ndarray, device: torch.device
    ) -> np.ndarray:
        """For each query token t: max over the rows j of its document of <q_flat[token_row[t]], E_j> -> (T,).

        Tokens come grouped by document (documents by increasing length). Each document's run of tokens is
        cut into items of at most C tokens; groups of consecutive items become one (G, L, Dc) x (G, Dc, C)
        GEMM, L = the group's longest document (shorter ones padded with copies of their last row).
        """
        run_start = np.flatnonzero(np.r_[True, token_doc[1:] != token_doc[:-1]])  # (D,) documents' runs
        run_len = np.diff(np.r_[run_start, len(token_doc)])
        chunk = _chunk_size(run_len)
        per_run = -(-run_len // chunk)  # items of each run
        first_item = np.r_[0, np.cumsum(per_run)[:-1]]
        item_start = np.repeat(run_start, per_run) + chunk * (
            np.arange(per_run.sum()) - np.repeat(first_item, per_run)
        )
        item_end = np.minimum(item_start + chunk, np.repeat(run_start + run_len, per_run))  # (I,)
        item_doc = token_doc[item_start]
        doc_len = self._length[item_doc].astype(np.int64)  # non-decreasing
        maxima = torch.empty(len(token_doc))
        offsets = np.arange(chunk)
        cap = CANDIDATE_ELEMENTS if device.type == "cpu" else DEVICE_CANDIDATE_ELEMENTS
        start = 0
        while start < len(item_doc):  # groups: as many items as fit under the cap
            # widths only grow, so no more than cap // (C x this item's width) items can fit: look no further
            span = min(len(item_doc) - start, cap // (chunk * max(1, int(doc_len[start]))) + 1)
            elements = np.arange(1, span + 1) * chunk * doc_len[start : start + span]  # (span,) if cut there
            stop = start + max(1, int(np.searchsorted(elements, cap, "right")))
            width = int(doc_len[stop - 1])
            positions = item_start[start:stop, None] + offsets  # (G, C) flat token positions
            valid = positions < item_end[start:stop, None]
            rows = token_row[np.minimum(positions, len(token_row) - 1)]  # invalid slots: any row, dropped
            q = q_flat.index_select(0, torch.from_numpy(rows.reshape(-1))).view(stop - start, chunk, self.dim)
            p = self._rows(item_doc[start:stop], width)  # (G, width, Dc)
            # (G, width, C) = documents x query tokens, max over the documents' rows: on CPU this orientation
            # (query side as the transposed operand, reduction down the columns) is the faster one
            best = torch.bmm(p.to(device), q.to(device).transpose(1, 2)).amax(1).cpu()  # (G, C)
            maxima[torch.from_numpy(positions[valid])] = best[torch.from_numpy(valid)]
            start = stop
        return maxima.numpy()

    def _rows(self, docs: np.ndarray, width: int) -> torch.Tensor:
        """The float32 vectors of ``docs`` (G,), each padded to ``width`` rows with copies of its last row."""
        length = self._length[docs].astype(np.int64)[:, None]
        row = self._start[docs][:, None] + np.minimum(np.arange(width), length - 1)  # (G, width)
        block = np.broadcast_to(self._block[docs][:, None], row.shape)
        out = torch.empty(row.size, self.dim)
        used = np.unique(self._block[docs])
        for b in used:
            src = torch.from_numpy(self._blocks[int(b)])
            if len(used) == 1 and src.dtype == out.dtype:
                torch.index_select(src, 0, torch.from_numpy(row.reshape(-1)), out=out)
            elif len(used) == 1:
                out.copy_(src.index_select(0, torch.from_numpy(row.reshape(-1))))  # float16: cast on the copy
            else:
                sel = np.flatnonzero(block.reshape(-1) == b)
                out.index_copy_(
                    0,
                    torch.from_numpy(sel),
                    src.index_select(0, torch.from_numpy(row.reshape(-1)[sel])).float(),
                )
        return out.view(len(docs), width, self.dim)


def _chunk_size(run_len: np.ndarray) -> int:
    """Query-token chunk C for runs of ``run_len`` tokens: the largest of ``_CHUNK_SIZES`` whose padding
    (each run rounded up to a multiple of C) adds at most ``_CHUNK_WASTE``, else the smallest."""
    total = run_len.sum()
    for c in _CHUNK_SIZES:
        if (-(-run_len // c) * c).sum() <= (1 + _CHUNK_WASTE) * total:
            return c
    return _CHUNK_SIZES[-1]
