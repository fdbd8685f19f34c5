"""Score functions for the three BGE-M3 representations. Pure, differentiable, un-tempered.

BGE-M3, arXiv:2402.03216 §3.2: s_dense = <e_q, e_p>; s_lex = sum over shared tokens t of w_q,t * w_p,t;
s_mul = (1/N_q) sum_i max_j <E_q,i, E_p,j>; s_rank = w1 s_dense + w2 s_lex + w3 s_mul.

Each ``*_scores`` function returns a raw (Bq, Bp) matrix (every query against every passage); each
``*_scores_pairwise`` returns (B,) scores of row i against row i (re-ranking, ``compute_score``).
Temperatures belong to the losses, not here.

Sparse scores never build a vocabulary-sized tensor (spec §0). Only ids present on BOTH sides can
contribute, so the distinct ids of the side with fewer tokens (usually the queries) form a batch-local
vocabulary of size U <= min(Bq*Lq, Bp*Lp, V). Each text is max-pooled into a (U,) vector with
``scatter_reduce(amax)`` (tokens of the other side that are not in it go to a discarded slot) and the
scores are one (Bq, U) @ (U, Bp) product. That equals the dot product of the (B, V) max-pooled vectors
exactly (ids absent from one side contribute 0), in value and in gradient, at O((Bq + Bp) * U) memory
instead of the reference's O(B * L * V) (``python -m benchmarks.sparse_memory`` at ae443f8 measured both: docs/performance.md).

>>> import torch
>>> q_w, q_ids = torch.tensor([[0.5, 0.2, 0.4]]), torch.tensor([[7, 9, 7]])   # token 7 twice: max 0.5
>>> p_w, p_ids = torch.tensor([[1.0, 3.0]]), torch.tensor([[7, 9]])
>>> sparse_scores(q_w, q_ids, p_w, p_ids)   # 0.5*1.0 + 0.2*3.0
tensor([[1.1000]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "dense_scores",
    "sparse_scores",
    "colbert_scores",
    "dense_scores_pairwise",
    "sparse_scores_pairwise",
    "colbert_scores_pairwise",
    "fused_scores",
]

#: Upper bound on the elements of ColBERT's 4-D (Bq, Lq, chunk, Lp) similarity block (~32 MB in fp32). Only one
#: block is alive at a time (also in backward, see ``_MaxSim``); larger blocks were not faster on CPU.
COLBERT_CHUNK_ELEMENTS = 8 * 1024 * 1024


def dense_scores(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Inner products of (Bq, D) query and (Bp, D) passage vectors -> (Bq, Bp).

    >>> dense_scores(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    tensor([[0.6000, 0.0000]])
    """
    _check_dims("dense_scores", q=(q, 2), p=(p, 2))
    if q.shape[-1] != p.shape[-1]:
        raise ValueError(f"dense_scores: query dim {q.shape[-1]} != passage dim {p.shape[-1]}")
    return q @ p.transpose(0, 1)


def dense_scores_pairwise(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Row-wise inner products of (B, D) and (B, D) -> (B,)."""
    _check_dims("dense_scores_pairwise", q=(q, 2), p=(p, 2))
    _check_same_rows("dense_scores_pairwise", q, p)
    return (q * p).sum(-1)


def sparse_scores(
    q_weights: torch.Tensor, q_ids: torch.Tensor, p_weights: torch.Tensor, p_ids: torch.Tensor
) -> torch.Tensor:
    """Lexical matching scores (Bq, Bp) from per-token weights (Bq, Lq), (Bp, Lp) and their ids.

    Exactly ``v_q @ v_p.T`` where v[t] = max over positions i with id t of w_i (0 if t is absent).
    Special tokens and padding must already carry weight 0 (``SparseHead`` does that).
    """
    _check_token_pair("sparse_scores", q_weights, q_ids, p_weights, p_ids)
    if p_ids.numel() < q_ids.numel():  # build the vocabulary from the smaller side
        return _sparse_on_vocab_of(p_weights, p_ids, q_weights, q_ids).transpose(0, 1)
    return _sparse_on_vocab_of(q_weights, q_ids, p_weights, p_ids)


def _sparse_on_vocab_of(
    a_weights: torch.Tensor, a_ids: torch.Tensor, b_weights: torch.Tensor, b_ids: torch.Tensor
) -> torch.Tensor:
    """(Ba, Bb) sparse scores on the vocabulary of side ``a`` (the ids that occur in ``a_ids``)."""
    vocab = torch.unique(a_ids)  # (U,) sorted
    size = vocab.numel()
    a_slots = torch.searchsorted(vocab, a_ids.contiguous())  # (Ba, La), every id is found
    b_pos = torch.searchsorted(vocab, b_ids.contiguous()).clamp_max(max(size - 1, 0))  # (Bb, Lb)
    b_found = vocab[b_pos] == b_ids if size else torch.zeros_like(b_ids, dtype=torch.bool)
    b_slots = torch.where(b_found, b_pos, torch.full_like(b_pos, size))  # absent ids -> discarded slot U
    a_vec = _max_pool(a_weights, a_slots, size)  # (Ba, U)
    b_vec = _max_pool(b_weights, b_slots, size + 1)[:, :size]  # (Bb, U)
    return a_vec @ b_vec.transpose(0, 1)


def sparse_scores_pairwise(
    q_weights: torch.Tensor, q_ids: torch.Tensor, p_weights: torch.Tensor, p_ids: torch.Tensor
) -> torch.Tensor:
    """Row-wise lexical scores: query i against passage i, (B, Lq) and (B, Lp) inputs -> (B,)."""
    _check_token_pair("sparse_scores_pairwise", q_weights, q_ids, p_weights, p_ids)
    _check_same_rows("sparse_scores_pairwise", q_ids, p_ids)
    rows = q_ids.shape[0]
    # Key each token by (row, id) so one flat batch-local vocabulary serves every pair at once.
    q_keys = q_ids + _row_offsets(q_ids, p_ids)
    p_keys = p_ids + _row_offsets(p_ids, q_ids)
    keys, inverse = torch.unique(torch.cat([q_keys.reshape(-1), p_keys.reshape(-1)]), return_inverse=True)
    n_q = q_ids.numel()
    q_vec = _max_pool(q_weights.reshape(1, -1), inverse[:n_q].view(1, -1), keys.numel())[0]  # (U,)
    p_vec = _max_pool(p_weights.reshape(1, -1), inverse[n_q:].view(1, -1), keys.numel())[0]  # (U,)
    key_rows = torch.div(keys, _id_span(q_ids, p_ids), rounding_mode="floor")  # (U,) row of each key
    return torch.zeros(rows, dtype=q_vec.dtype, device=q_vec.device).index_add(0, key_rows, q_vec * p_vec)


def colbert_scores(
    q_vecs: torch.Tensor,
    q_mask: torch.Tensor,
    p_vecs: torch.Tensor,
    p_mask: torch.Tensor,
    chunk_elements: int = COLBERT_CHUNK_ELEMENTS,
    recompute: bool | None = None,
) -> torch.Tensor:
    """Late-interaction (MaxSim) scores (Bq, Bp).

    s(q, p) = sum_i m_q,i * max_{j: m_p,j} <q_i, p_j> / sum_i m_q,i, for query vectors (Bq, Lq, D) with mask
    (Bq, Lq) and passage vectors (Bp, Lp, D) with mask (Bp, Lp); masks align with the vectors (CLS already
    dropped). Padded passage tokens are excluded from the max, so padding never changes a score (the
    reference's padded zero vectors clip a negative max at 0; its unpadded ``colbert_score`` does not).
    A passage without real tokens scores 0, and so does a query without real tokens.

    Passages are processed in chunks so the (Bq, Lq, chunk, Lp) block stays under ``chunk_elements``.
    With ``recompute`` (``None``/``True``, the default) the blocks are not kept for backward: ``_MaxSim``
    recomputes one chunk's block at a time there and turns it into the gradient in place, so the memory of a
    training step holds one block, not every chunk's, whatever the batch. ``recompute=False`` is plain
    autograd (every block is kept; torch's FLOP counter sees the ops). Values and gradients are the same.

    >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]); qm = torch.tensor([[True, True]])
    >>> p = torch.tensor([[[0.6, 0.8], [1.0, 0.0]]]); pm = torch.tensor([[True, True]])
    >>> colbert_scores(q, qm, p, pm)   # (max(0.6, 1.0) + max(0.8, 0.0)) / 2
    tensor([[0.9000]])
    """
    _check_colbert("colbert_scores", q_vecs, q_mask, p_vecs, p_mask)
    n_q, l_q = q_vecs.shape[:2]
    per_passage = max(1, n_q * l_q * p_vecs.shape[1])
    chunk = max(1, chunk_elements // per_passage)
    q_weight = q_mask.to(q_vecs.dtype)  # (Bq, Lq)
    q_count = q_weight.sum(-1, keepdim=True).clamp_min(1)  # (Bq, 1)
    if p_vecs.shape[0] == 0:
        return q_vecs.new_zeros(n_q, 0)
    if recompute is False:  # plain autograd: every chunk's block is kept for backward
        blocks = [
            _maxsim_block(
                q_vecs, q_weight, p_vecs[start : start + chunk], p_mask[start : start + chunk].bool()
            )
            for start in range(0, p_vecs.shape[0], chunk)
        ]
        return torch.cat(blocks, dim=1) / q_count
    return _MaxSim.apply(q_vecs, q_weight, p_vecs, p_mask.bool(), chunk) / q_count


def _maxsim_block(
    q_vecs: torch.Tensor, q_weight: torch.Tensor, p_vecs: torch.Tensor, p_mask: torch.Tensor
) -> torch.Tensor:
    """Un-normalised MaxSim sums (Bq, C) of queries (Bq, Lq, D) against a passage chunk (C, Lp, D)."""
    sim = torch.einsum("aid,bjd->aibj", q_vecs, p_vecs)  # (Bq, Lq, C, Lp)
    sim = sim.masked_fill(~p_mask[None, None], torch.finfo(sim.dtype).min)
    best = sim.amax(-1) * p_mask.any(-1)[None, None].to(sim.dtype)  # (Bq, Lq, C); empty passage -> 0
    return torch.einsum("aic,ai->ac", best, q_weight)  # (Bq, C)


def _masked_sim(q_vecs: torch.Tensor, p_vecs: torch.Tensor, p_mask: torch.Tensor) -> torch.Tensor:
    """(Bq, Lq, C, Lp) similarities of queries (Bq, Lq, D) and a passage chunk (C, Lp, D), built as ONE
    (Bq*Lq, C*Lp) matmul output; padded passage tokens are set to the dtype's minimum in place."""
    n_q, l_q, dim = q_vecs.shape
    n_p, l_p = p_vecs.shape[:2]
    sim = (q_vecs.reshape(n_q * l_q, dim) @ p_vecs.reshape(n_p * l_p, dim).t()).view(n_q, l_q, n_p, l_p)
    return sim.masked_fill_(~p_mask[None, None], torch.finfo(sim.dtype).min)


class _MaxSim(torch.autograd.Function):
    """Un-normalised MaxSim sums (Bq, Bp) = sum_i w_q,i * max_j <q_i, p_j>, chunked over passages.

    Forward: queries (Bq, Lq, D), query weights (Bq, Lq) (the mask as floats, no gradient), passages
    (Bp, Lp, D), passage mask (Bp, Lp) bool, ``chunk`` passages per block. Only the inputs are saved.
    Backward recomputes one (Bq, Lq, C, Lp) block at a time and turns it, in place, into the gradient of
    the max (``amax``'s rule: an upstream gradient is shared evenly between exactly tied maxima):
    g[a,i,b,j] = G[a,b] * w_q[a,i] * [sim[a,i,b,j] == max_j sim[a,i,b,:]] / (number of ties). Then
    dq = g @ p and dp = g^T @ q are two matmuls, so one block is the only 4-D tensor alive at any moment
    (``torch.autograd`` through ``_maxsim_block`` keeps the masked block for ``amax`` and makes 3-4 more
    block-sized temporaries in its backward). Values and gradients equal ``_maxsim_block``'s.
    """

    @staticmethod
    def forward(ctx, q_vecs, q_weight, p_vecs, p_mask, chunk):
        ctx.save_for_backward(q_vecs, q_weight, p_vecs, p_mask)
        ctx.chunk = chunk
        out = q_vecs.new_empty(q_vecs.shape[0], p_vecs.shape[0])
        for start in range(0, p_vecs.shape[0], chunk):
            stop = start + chunk
            best = _masked_sim(q_vecs, p_vecs[start:stop], p_mask[start:stop]).amax(-1)  # (Bq, Lq, C)
            best = best * p_mask[start:stop].any(-1).to(best.dtype)  # empty passage -> 0
            out[:, start:stop] = torch.einsum("aic,ai->ac", best, q_weight)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        # Backward runs under the caller's autocast (a bf16-mixed step); the forward ran in float32.
        with torch.autocast(grad_out.device.type, enabled=False):
            return _MaxSim._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        q_vecs, q_weight, p_vecs, p_mask = ctx.saved_tensors
        n_q, l_q, dim = q_vecs.shape
        l_p = p_vecs.shape[1]
        q_flat = q_vecs.reshape(n_q * l_q, dim)
        grad_q = torch.zeros_like(q_flat) if ctx.needs_input_grad[0] else None
        grad_p = p_vecs.new_empty(p_vecs.shape) if ctx.needs_input_grad[2] else None
        for start in range(0, p_vecs.shape[0], ctx.chunk):
            stop = min(start + ctx.chunk, p_vecs.shape[0])
            p_chunk = p_vecs[start:stop]
            sim = _masked_sim(q_vecs, p_chunk, p_mask[start:stop])  # (Bq, Lq, C, Lp)
            best = sim.amax(-1, keepdim=True)
            ties = sim.eq_(best)  # in place: 1.0 where sim holds the max, else 0.0
            coef = grad_out[:, None, start:stop] * q_weight[:, :, None]  # (Bq, Lq, C)
            coef = coef * p_mask[start:stop].any(-1).to(coef.dtype) / ties.sum(-1)
            weights = ties.mul_(coef[..., None]).view(n_q * l_q, (stop - start) * l_p)  # d out / d sim
            if grad_q is not None:
                grad_q.addmm_(weights, p_chunk.reshape(-1, dim))
            if grad_p is not None:
                torch.mm(weights.t(), q_flat, out=grad_p[start:stop].view(-1, dim))
            del sim, ties, weights
        grad_q = None if grad_q is None else grad_q.view_as(q_vecs)
        return grad_q, None, grad_p, None, None


def colbert_scores_pairwise(
    q_vecs: torch.Tensor, q_mask: torch.Tensor, p_vecs: torch.Tensor, p_mask: torch.Tensor
) -> torch.Tensor:
    """Row-wise MaxSim: query i against passage i, (B, Lq, D) and (B, Lp, D) inputs -> (B,)."""
    _check_colbert("colbert_scores_pairwise", q_vecs, q_mask, p_vecs, p_mask)
    _check_same_rows("colbert_scores_pairwise", q_vecs, p_vecs)
    sim = torch.einsum("bid,bjd->bij", q_vecs, p_vecs)  # (B, Lq, Lp)
    p_mask = p_mask.bool()
    sim = sim.masked_fill(~p_mask[:, None], torch.finfo(sim.dtype).min)
    best = sim.amax(-1) * p_mask.any(-1, keepdim=True).to(sim.dtype)  # (B, Lq)
    q_weight = q_mask.to(q_vecs.dtype)
    return (best * q_weight).sum(-1) / q_weight.sum(-1).clamp_min(1)


def fused_scores(
    dense: torch.Tensor | None,
    sparse: torch.Tensor | None,
    colbert: torch.Tensor | None,
    weights: Sequence[float] = (1.0, 0.3, 1.0),
    normalize: bool = False,
) -> torch.Tensor:
    """Weighted sum w_d*dense + w_s*sparse + w_c*colbert of any same-shaped scores; None terms are left out.

    The default weights are the training ensemble s_inter = s_dense + 0.3 s_lex + s_mul (reference code;
    paper v2 writes them unweighted). ``normalize=True`` divides by the sum of the weights used, as
    FlagEmbedding's ``compute_score`` does for its ``sparse+dense`` and ``colbert+sparse+dense`` keys.

    >>> fused_scores(torch.tensor([1.0]), torch.tensor([2.0]), None, weights=(1.0, 0.5, 1.0))
    tensor([2.])
    """
    if len(weights) != 3:
        raise ValueError(f"fused_scores: need 3 weights (dense, sparse, colbert), got {len(weights)}")
    terms = [(w, s) for w, s in zip(weights, (dense, sparse, colbert), strict=True) if s is not None]
    if not terms:
        raise ValueError("fused_scores: every score is None")
    shapes = {tuple(s.shape) for _, s in terms}
    if len(shapes) > 1:
        raise ValueError(f"fused_scores: score shapes differ: {sorted(shapes)}")
    total = sum(w * s for w, s in terms)
    if normalize:
        total = total / sum(w for w, _ in terms)
    return total


# ---------------------------------------------------------------------------------------------- helpers
def _max_pool(weights: torch.Tensor, slots: torch.Tensor, size: int) -> torch.Tensor:
    """Max of (R, L) ``weights`` per (R, L) vocabulary ``slots`` -> (R, size); 0 where a slot is absent.

    Weights are >= 0 (ReLU), so the zero initial value never beats a present token's weight; gradients
    reach the positions holding the max (shared evenly between exact ties).
    """
    out = torch.zeros(weights.shape[0], size, dtype=weights.dtype, device=weights.device)
    return out.scatter_reduce(1, slots, weights, reduce="amax", include_self=True)


def _id_span(*ids: torch.Tensor) -> int:
    return int(max(int(t.max()) if t.numel() else 0 for t in ids)) + 1


def _row_offsets(ids: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """(B, 1) offsets row * span, where span exceeds every id in both tensors."""
    span = _id_span(ids, other)
    return torch.arange(ids.shape[0], device=ids.device).unsqueeze(1) * span


def _check_dims(fn: str, **tensors: tuple[torch.Tensor, int]) -> None:
    for name, (tensor, ndim) in tensors.items():
        if tensor.dim() != ndim:
            raise ValueError(f"{fn}: {name} must be {ndim}-D, got shape {tuple(tensor.shape)}")


def _check_same_rows(fn: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{fn}: pairwise scoring needs as many passages as queries ({a.shape[0]} vs {b.shape[0]})"
        )


def _check_token_pair(
    fn: str, qw: torch.Tensor, qi: torch.Tensor, pw: torch.Tensor, pi: torch.Tensor
) -> None:
    _check_dims(fn, q_weights=(qw, 2), q_ids=(qi, 2), p_weights=(pw, 2), p_ids=(pi, 2))
    if qw.shape != qi.shape:
        raise ValueError(
            f"{fn}: q_weights {tuple(qw.shape)} and q_ids {tuple(qi.shape)} must have the same shape"
        )
    if pw.shape != pi.shape:
        raise ValueError(
            f"{fn}: p_weights {tuple(pw.shape)} and p_ids {tuple(pi.shape)} must have the same shape"
        )
    for name, ids in (("q_ids", qi), ("p_ids", pi)):
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"{fn}: {name} must hold integer token ids, got dtype {ids.dtype}")
    for name, weights in (("q_weights", qw), ("p_weights", pw)):
        if not weights.is_floating_point():
            raise ValueError(f"{fn}: {name} must be floating point, got dtype {weights.dtype}")


def _check_colbert(fn: str, qv: torch.Tensor, qm: torch.Tensor, pv: torch.Tensor, pm: torch.Tensor) -> None:
    _check_dims(fn, q_vecs=(qv, 3), q_mask=(qm, 2), p_vecs=(pv, 3), p_mask=(pm, 2))
    if qv.shape[:2] != qm.shape:
        raise ValueError(f"{fn}: q_mask {tuple(qm.shape)} does not align with q_vecs {tuple(qv.shape)}")
    if pv.shape[:2] != pm.shape:
        raise ValueError(f"{fn}: p_mask {tuple(pm.shape)} does not align with p_vecs {tuple(pv.shape)}")
    if qv.shape[-1] != pv.shape[-1]:
        raise ValueError(f"{fn}: query dim {qv.shape[-1]} != passage dim {pv.shape[-1]}")


def bm25_idf(df: np.ndarray, n_docs: int) -> np.ndarray:
    """BM25's idf, elementwise over document frequencies ``df`` (any shape) in a corpus of ``n_docs``:
    ``ln(1 + (N - df + 0.5) / (df + 0.5))`` (Lucene / Pyserini; always > 0)."""
    return np.log1p((n_docs - df + 0.5) / (df + 0.5))
