"""Scores of given (query, passage) pairs from :func:`~m3lit.inference.encoding.encode_texts` outputs.

BGE-M3, arXiv:2402.03216 §3.2, on unpadded per-text outputs (so a score never depends on which other texts
shared its batch): s_dense = <e_q, e_p>, s_lex = sum over shared token ids of w_q,t * w_p,t, s_mul = MaxSim
over real tokens only, and the weighted sum s = w_d s_dense + w_s s_lex + w_c s_mul (Eq. (5), s_rank; with
the training weights (1, 0.3, 1) it is the self-distillation teacher s_inter of §3.3 Eq. (2)). The formulas
are :mod:`m3lit.scores`'s pairwise functions and :func:`~m3lit.scores.fused_scores`; this module only pads
the ragged per-text outputs of the pairs into their tensors. Hard-negative mining's filters and the teacher
scores of an m3lit model (``python -m m3lit.corpora.teacher_scores``) use it.

>>> import numpy as np
>>> q = EncodedTexts(dense=np.array([[1.0, 0.0]], np.float32))
>>> p = EncodedTexts(dense=np.array([[0.6, 0.8], [0.0, 1.0]], np.float32))
>>> pair_scores(q, p, [0, 0], [0, 1], weights=(1.0, 0.0, 0.0)).tolist()
[0.6000000238418579, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from m3lit.inference.encoding import EncodedTexts
from m3lit.scores import colbert_scores_pairwise, dense_scores_pairwise, fused_scores, sparse_scores_pairwise

__all__ = ["pair_scores", "needed_heads"]

#: Pairs scored together (bounds the padded (B, L, Dc) ColBERT tensors).
PAIR_BLOCK = 512


def needed_heads(weights: Sequence[float]) -> dict[str, bool]:
    """``{"dense": .., "sparse": .., "colbert": ..}``: the outputs that ``weights`` (w_d, w_s, w_c) use."""
    if len(weights) != 3 or any(w < 0 for w in weights) or not any(weights):
        raise ValueError(
            f"weights must be 3 non-negative numbers (dense, sparse, colbert), not all 0: {weights}"
        )
    return {head: w > 0 for head, w in zip(("dense", "sparse", "colbert"), weights, strict=True)}


def pair_scores(
    queries: EncodedTexts,
    passages: EncodedTexts,
    query_rows: Sequence[int],
    passage_rows: Sequence[int],
    weights: Sequence[float] = (1.0, 0.3, 1.0),
) -> np.ndarray:
    """``w_d s_dense + w_s s_lex + w_c s_mul`` of query ``query_rows[i]`` with passage ``passage_rows[i]``.

    Args:
        queries / passages: encoded texts holding every output whose weight is > 0.
        query_rows / passage_rows: (P,) row numbers into ``queries`` and ``passages``, one pair per position.
        weights: (w_d, w_s, w_c); a head of weight 0 is left out (its output need not be encoded).

    Returns:
        (P,) float32 scores.
    """
    heads = needed_heads(weights)
    if len(query_rows) != len(passage_rows):
        raise ValueError(f"pair_scores: {len(query_rows)} query rows but {len(passage_rows)} passage rows")
    for head, used in heads.items():
        if used and (getattr(queries, head) is None or getattr(passages, head) is None):
            raise ValueError(f"pair_scores: weight of {head} is > 0 but the texts were encoded without it")
    out = np.zeros(len(query_rows), np.float32)
    for start in range(0, len(query_rows), PAIR_BLOCK):
        q = list(query_rows[start : start + PAIR_BLOCK])
        p = list(passage_rows[start : start + PAIR_BLOCK])
        parts = {
            "dense": _dense(queries, passages, q, p) if heads["dense"] else None,
            "sparse": _sparse(queries, passages, q, p) if heads["sparse"] else None,
            "colbert": _colbert(queries, passages, q, p) if heads["colbert"] else None,
        }
        out[start : start + len(q)] = fused_scores(**parts, weights=tuple(weights)).numpy()
    return out


def _dense(queries: EncodedTexts, passages: EncodedTexts, q: list[int], p: list[int]) -> torch.Tensor:
    return dense_scores_pairwise(torch.from_numpy(queries.dense[q]), torch.from_numpy(passages.dense[p]))


def _sparse(queries: EncodedTexts, passages: EncodedTexts, q: list[int], p: list[int]) -> torch.Tensor:
    """Each text's (unique ids, weights) as a padded token row of weight 0 padding (padding never matches:
    a 0 weight contributes 0 to the max-pooled dot product)."""
    q_ids, q_w = _pad_sparse([queries.sparse[i] for i in q])
    p_ids, p_w = _pad_sparse([passages.sparse[i] for i in p])
    return sparse_scores_pairwise(q_w, q_ids, p_w, p_ids)


def _pad_sparse(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(ids) for ids, _ in rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    weights = torch.zeros(len(rows), width, dtype=torch.float32)
    for r, (i, w) in enumerate(rows):
        ids[r, : len(i)] = torch.from_numpy(np.asarray(i, np.int64))
        weights[r, : len(w)] = torch.from_numpy(np.asarray(w, np.float32))
    return ids, weights


def _colbert(queries: EncodedTexts, passages: EncodedTexts, q: list[int], p: list[int]) -> torch.Tensor:
    q_vecs, q_mask = _pad_vectors([queries.colbert[i] for i in q])
    p_vecs, p_mask = _pad_vectors([passages.colbert[i] for i in p])
    return colbert_scores_pairwise(q_vecs, q_mask, p_vecs, p_mask)


def _pad_vectors(rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged (n_i, Dc) arrays -> (B, L, Dc) zero-padded vectors and their (B, L) mask of real rows."""
    width = max(1, max(len(r) for r in rows))
    vecs = torch.zeros(len(rows), width, rows[0].shape[-1], dtype=torch.float32)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for r, row in enumerate(rows):
        vecs[r, : len(row)] = torch.from_numpy(np.asarray(row, np.float32))
        mask[r, : len(row)] = True
    return vecs, mask
