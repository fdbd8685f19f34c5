"""BM25 baseline over the model's own tokenizer, as an inverted index (:class:`SparseIndex`).

The paper's BM25 rows use the XLM-R tokenizer (BGE-M3, arXiv:2402.03216 Table 11, "BM25 (XLM-R tok.)";
spec §6), so this one tokenises with the evaluated model's tokenizer (special tokens dropped, no
truncation). Scoring is Lucene's BM25 (Kamphuis et al., ECIR 2020), summed over the query's tokens with
their multiplicity:

    score(q, d) = sum_t c_q(t) * idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl)),
    idf(t) = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5)).

Each document's term weights are computed once, so search is the sparse product of the query's
term-count vector with the weight matrix: the same code path as the learnt sparse mode. Defaults
k1 = 0.9, b = 0.4 are Anserini/Pyserini's, the toolkit the paper's evaluation used (the exact values of
the paper's BM25 runs are UNVERIFIED).

>>> docs = [[5, 6, 6], [7]]
>>> index = BM25Index(vocab_size=10)
>>> index.add(docs)
>>> index.search([[6]], k=2).indices.tolist()
[[0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from transformers import PreTrainedTokenizerBase

from m3lit.retrieval.index.ranking import Ranking
from m3lit.retrieval.index.sparse import SparseIndex
from m3lit.scores import bm25_idf

__all__ = ["BM25Index", "bm25_tokenize"]


def bm25_tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], drop_ids: Sequence[int] = ()
) -> list[np.ndarray]:
    """Token ids of each text, without special tokens or truncation (BM25 reads whole documents)."""
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    drop = np.asarray(sorted(drop_ids), np.int64)
    out = []
    for row in ids:
        row = np.asarray(row, np.int64)
        out.append(row[~np.isin(row, drop)] if drop.size else row)
    return out


def _counts(token_lists: Sequence[Sequence[int]], vocab_size: int) -> sp.csr_matrix:
    """(n, V) term-frequency matrix of token id lists."""
    lengths = np.array([len(t) for t in token_lists], np.int64)
    cols = (
        np.concatenate([np.asarray(t, np.int64) for t in token_lists])
        if lengths.sum()
        else np.zeros(0, np.int64)
    )
    if cols.size and (cols.min() < 0 or cols.max() >= vocab_size):
        raise ValueError(f"BM25: token id outside [0, {vocab_size})")
    rows = np.repeat(np.arange(len(token_lists)), lengths)
    matrix = sp.csr_matrix(
        (np.ones(cols.size, np.float32), (rows, cols)), shape=(len(token_lists), vocab_size)
    )
    matrix.sum_duplicates()
    return matrix


class BM25Index:
    """Lucene BM25 over token ids.

    Args:
        vocab_size: number of token ids.
        k1: term-frequency saturation.
        b: length normalisation.
    """

    def __init__(self, vocab_size: int, *, k1: float = 0.9, b: float = 0.4) -> None:
        self.vocab_size, self.k1, self.b = vocab_size, k1, b
        self._counts: list[sp.csr_matrix] = []
        self._index: SparseIndex | None = None

    def __len__(self) -> int:
        return sum(c.shape[0] for c in self._counts)

    def add(self, token_lists: Sequence[Sequence[int]]) -> None:
        """Append documents given as token id lists (shard by shard; weights are computed at search time)."""
        self._counts.append(_counts(token_lists, self.vocab_size))
        self._index = None

    def search(self, query_token_lists: Sequence[Sequence[int]], k: int) -> Ranking:
        """Top-k documents with a positive BM25 score for each query (shorter lists when fewer match)."""
        return self._build().search(_counts(query_token_lists, self.vocab_size), k)

    def weights(self) -> sp.csr_matrix:
        """(N, V) BM25 weight of every (document, term) pair present."""
        return self._build().documents

    def _build(self) -> SparseIndex:
        if self._index is None:
            tf = (
                sp.vstack(self._counts, format="csr") if self._counts else sp.csr_matrix((0, self.vocab_size))
            )
            n_docs = tf.shape[0]
            doc_len = np.asarray(tf.sum(1)).ravel()  # (N,)
            avgdl = max(float(doc_len.mean()) if n_docs else 0.0, 1e-9)
            df = np.bincount(tf.indices, minlength=self.vocab_size)  # (V,) documents containing each term
            idf = bm25_idf(df, n_docs)
            rows = np.repeat(np.arange(n_docs), np.diff(tf.indptr))  # document of each stored entry
            norm = self.k1 * (1 - self.b + self.b * doc_len[rows] / avgdl)
            data = idf[tf.indices] * tf.data / (tf.data + norm)
            weights = sp.csr_matrix((data.astype(np.float32), tf.indices, tf.indptr), shape=tf.shape)
            self._index = SparseIndex(self.vocab_size)
            self._index.add(weights)
        return self._index
