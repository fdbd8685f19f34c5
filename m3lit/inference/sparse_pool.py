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

    One pass over the whole batch (no per-row loop): the kept positions are keyed by ``row * V + id``, so a
    single ``np.unique`` groups each row's occurrences of an id, and the groups are then ordered by row and
    first position and split by row.

    Args:
        weights: (N, L) per-token weights; ``SparseHead`` already zeroed special tokens and padding.
        ids: (N, L) the token ids at those positions.

    Returns:
        N pairs ``(ids, weights)``: (U_i,) int64 unique ids and (U_i,) float32 their max weights.
    """
    weights = np.asarray(weights)
    rows, cols = np.nonzero(weights > 0)  # row-major: each row's positions in order
    tokens = np.asarray(ids)[rows, cols].astype(np.int64)
    span = int(tokens.max()) + 1 if tokens.size else 1
    keys, first, inverse = np.unique(rows * span + tokens, return_index=True, return_inverse=True)
    best = np.zeros(len(keys), dtype=np.float32)
    np.maximum.at(best, inverse.reshape(-1), weights[rows, cols].astype(np.float32))
    order = np.argsort(first, kind="stable")  # by row, then first weighted position
    keys, best = keys[order], best[order]
    owner = keys // span
    bounds = np.searchsorted(owner, np.arange(len(weights) + 1))
    tokens = keys - owner * span
    return [(tokens[a:b], best[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
