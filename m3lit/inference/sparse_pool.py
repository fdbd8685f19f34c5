"""Max-pooling of per-token lexical weights into one sparse vector per text (BGE-M3, arXiv:2402.03216 §3.2).

The lexical head gives every token position a weight; a text's sparse representation keeps, per unique
token id, the largest weight of that id (Eq. 2's max over occurrences), and only ids whose weight is > 0.
Shared by the PyTorch encoder (:mod:`m3lit.inference.encoding`), the ONNX runtime and the merging of
windows (:mod:`m3lit.inference.windows`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["sparse_rows"]


def sparse_rows(weights: np.ndarray, ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row: unique ids with weight > 0, their max weight, ordered by first weighted occurrence.

    Args:
        weights: (N, L) per-token weights; ``SparseHead`` already zeroed special tokens and padding.
        ids: (N, L) the token ids at those positions.

    Returns:
        N pairs ``(ids, weights)``: (U_i,) int64 unique ids and (U_i,) float32 their max weights.
    """
    rows = []
    for w, t in zip(weights, ids, strict=True):
        keep = w > 0
        w, t = w[keep], t[keep].astype(np.int64)
        uniq, first, inverse = np.unique(t, return_index=True, return_inverse=True)
        best = np.zeros(len(uniq), dtype=np.float32)
        np.maximum.at(best, inverse, w)
        by_first = np.argsort(first, kind="stable")
        rows.append((uniq[by_first], best[by_first]))
    return rows
