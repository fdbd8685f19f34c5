"""Max-pooling of lexical weights per unique token (m3lit.inference.sparse_pool) against a plain loop."""

from __future__ import annotations

import numpy as np

from m3lit.inference.sparse_pool import sparse_rows


def _naive(weights: np.ndarray, ids: np.ndarray) -> list[dict[int, float]]:
    """Per row, {id: max weight} over positions with weight > 0, in order of first weighted occurrence."""
    out = []
    for w_row, id_row in zip(weights, ids, strict=True):
        row: dict[int, float] = {}
        for w, t in zip(w_row, id_row, strict=True):
            if w > 0:
                row[int(t)] = max(row.get(int(t), 0.0), float(w))
        out.append(row)
    return out


def test_sparse_rows_equal_a_loop_over_every_row():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 12, (7, 30))  # few ids: many repeats within a row
    weights = rng.random((7, 30), dtype=np.float32) - 0.3  # some <= 0 (dropped)
    weights[2] = 0.0  # a row with nothing kept
    weights[4, 20:] = 0.0  # padding
    rows = sparse_rows(weights, ids)
    assert len(rows) == 7
    for (uniq, best), expected in zip(rows, _naive(weights, ids), strict=True):
        assert uniq.dtype == np.int64 and best.dtype == np.float32
        assert list(uniq) == list(expected)  # order of first weighted occurrence
        assert [float(b) for b in best] == list(expected.values())
    assert len(rows[2][0]) == 0


def test_sparse_rows_of_an_empty_batch():
    assert sparse_rows(np.zeros((0, 5), np.float32), np.zeros((0, 5), np.int64)) == []
    empty = sparse_rows(np.zeros((2, 3), np.float32), np.ones((2, 3), np.int64))
    assert [len(u) for u, _ in empty] == [0, 0]
