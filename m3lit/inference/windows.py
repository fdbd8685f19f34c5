"""Windowed encoding of long texts, for encoders whose learnt positions end before the text does.

multilingual-e5-small (and BERT-style encoders in general) learnt 512 absolute positions. m3lit extends
them to 8192 by copies (:mod:`m3lit.model.positions`), so a whole chapter fits in one pass, but the copied
positions were never trained: position 512 + k looks like position k. BGE-M3 itself learnt 8192 positions
(arXiv:2402.03216 §3.4), so the paper encodes long documents in one pass and needs none of this.

With ``window`` set, :func:`m3lit.inference.encoding.encode_texts` encodes a text of more than ``window``
tokens as consecutive windows instead, each a sequence of its own that stays within the learnt positions.

Exact choices
-------------
* **Reading.** The whole text is tokenised, up to ``max_length`` tokens: ``max_length`` caps the tokens read
  and may exceed the encoder's positions; only ``window`` must fit them (``window <= model.max_length``).
  Windows and MCLS (:mod:`m3lit.inference.mcls`) do not combine: every entry point refuses the pair.
* **Cutting.** The tokenised text ``<s> t_1 .. t_n </s>`` (truncated to ``max_length``) becomes
  ``<s> t_1 .. t_M </s>``, ``<s> t_M+1 .. t_2M </s>``, ... with ``M = window - 2`` content tokens per
  window (the last may hold fewer). Windows do not overlap. A text of at most ``window`` tokens is one
  window, encoded as without windowing, except that its dense vector is L2-normalised once more (which
  can change its last bits, and so order near-ties differently).
* **Dense.** The mean of the windows' dense vectors (each already L2-normalised by the dense head), then
  L2-normalised again when the head normalises. Like MCLS (App. B.2), every part of the text has a say.
* **Sparse.** Per token id, the largest weight over all windows: the max-pooling the paper applies per
  token id within one text (§3.2, Eq. 2), taken over the whole text. Ids keep the order of their first
  weighted occurrence.
* **ColBERT.** The windows' token vectors in text order, with every window's closing ``</s>`` row dropped
  but the last one's, so a text yields one vector per content token plus ``</s>``, as in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from m3lit.inference.sparse_pool import sparse_rows

__all__ = ["split_windows", "merge_windows"]


def split_windows(
    rows: Sequence[Sequence[int]], window: int, cls_id: int, eos_id: int
) -> tuple[list[list[int]], np.ndarray]:
    """Cut every tokenised text longer than ``window`` into consecutive windows.

    Args:
        rows: token ids per text, each ``[cls_id, t_1, .., t_n, eos_id]``.
        window: the most tokens per window, ``<s>`` and ``</s>`` included (>= 3).
        cls_id / eos_id: the ids that open and close every window.

    Returns:
        ``(windows, owners)``: the windows of all texts in text order, and (W,) int64 the index of the
        text each window came from.

    >>> split_windows([[0, 5, 6, 7, 8, 9, 2], [0, 4, 2]], window=4, cls_id=0, eos_id=2)
    ([[0, 5, 6, 2], [0, 7, 8, 2], [0, 9, 2], [0, 4, 2]], array([0, 0, 0, 1]))
    """
    if window < 3:
        raise ValueError(f"window must hold <s>, one token and </s> (>= 3), got {window}")
    per_window = window - 2
    windows: list[list[int]] = []
    owners: list[int] = []
    for index, ids in enumerate(rows):
        ids = list(ids)
        if len(ids) <= window:
            windows.append(ids)
            owners.append(index)
            continue
        if ids[0] != cls_id or ids[-1] != eos_id:
            raise ValueError(
                f"windowed encoding needs texts tokenised as [cls={cls_id}, ..., eos={eos_id}], got ids "
                f"starting {ids[:3]} and ending {ids[-3:]}"
            )
        content = ids[1:-1]
        for start in range(0, len(content), per_window):
            windows.append([cls_id, *content[start : start + per_window], eos_id])
            owners.append(index)
    return windows, np.asarray(owners, dtype=np.int64)


def merge_windows(
    owners: np.ndarray,
    *,
    dense: np.ndarray | None = None,
    sparse: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    colbert: Sequence[np.ndarray] | None = None,
    normalize: bool = True,
) -> tuple[np.ndarray | None, list | None, list | None]:
    """Merge per-window outputs into per-text outputs (the choices of the module docstring).

    Args:
        owners: (W,) the text of each window, non-decreasing (as :func:`split_windows` returns them).
        dense: (W, H) the windows' dense vectors.
        sparse: per window ``(ids, weights)``, unique ids with weights > 0.
        colbert: per window a (n_w, D) array, its last row the window's ``</s>``.
        normalize: L2-normalise the mean dense vector (as the dense head does).

    Returns:
        ``(dense, sparse, colbert)`` per text: (N, H), N ``(ids, weights)`` pairs, N (n_i, D) arrays; None
        where the input was None.
    """
    if len(owners) == 0:
        return dense, None if sparse is None else [], None if colbert is None else []
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    spans = list(zip(starts, np.r_[starts[1:], len(owners)], strict=True))
    merged_dense = merged_sparse = merged_colbert = None
    if dense is not None:
        merged_dense = np.stack([dense[a:b].mean(axis=0) for a, b in spans]).astype(dense.dtype)
        if normalize:
            norms = np.linalg.norm(merged_dense, axis=1, keepdims=True)
            merged_dense = merged_dense / np.maximum(norms, 1e-12)
    if sparse is not None:
        merged_sparse = [
            sparse_rows(
                [np.concatenate([sparse[w][1] for w in range(a, b)])],
                [np.concatenate([sparse[w][0] for w in range(a, b)])],
            )[0]
            for a, b in spans
        ]
    if colbert is not None:
        merged_colbert = [
            np.concatenate([colbert[w][:-1] for w in range(a, b - 1)] + [colbert[b - 1]]) for a, b in spans
        ]
    return merged_dense, merged_sparse, merged_colbert
