"""Attention with dropout on the probabilities, computed in chunks so the L x L matrix never exists whole.

out = softmax(Q K^T * scale + mask) ⊙ M V / (1 - p'), with M a Bernoulli keep mask (the attention dropout of
XLM-R/BERT, which BGE-M3 fine-tuning leaves on; arXiv:2402.03216 App. B.1 trains at up to 8192 tokens).

The (B, heads, Lq, Lk) scores are computed one chunk at a time: whole sequences while a chunk stays under
:data:`CHUNK_SCORES` score elements, otherwise blocks of query rows of one sequence. Nothing of size
Lq x Lk outlives its chunk, so memory is O(L x rows) instead of O(L^2). Backward recomputes the chunk's probabilities from Q and K (softmax
recomputation, as in memory-efficient attention) and uses the softmax gradient

    dS = P ⊙ (dP - rowsum(dP ⊙ P)),   dP = (dO V^T) ⊙ M / (1 - p'),   dQ = scale dS K,  dK = scale dS^T Q.

The keep mask of chunk c comes from its own ``torch.Generator`` seeded with ``seed + c``
(:func:`chunk_keep`), ``seed`` being one draw from the default generator per call: the masks follow
``torch.manual_seed`` and gradient checkpointing's RNG replay, and backward regenerates them instead of
storing Lq x Lk bits. With at most :data:`SAVE_MASK_MAX_KEYS` keys the 2-byte masks are kept instead
(at most heads x 1 KiB per query token; drawing them is the dearest element-wise step).
"""

from __future__ import annotations

import torch

from m3lit.model.dropout_mask import drop_probability, keep_multiplier

__all__ = ["CHUNK_SCORES", "SAVE_MASK_MAX_KEYS", "chunk_keep", "chunks", "dropout_attention"]

#: Score elements per chunk (fp32: 16 MiB). Few, large operations: each is a parallel region, and on a loaded
#: machine 2**18-element chunks (1 MiB, cache-resident) made a layer several times slower than one L x L pass.
CHUNK_SCORES = 2**22
#: Keys up to which forward keeps the chunks' keep masks for backward; beyond, backward redraws them.
SAVE_MASK_MAX_KEYS = 512


def chunks(batch: int, heads: int, lq: int, lk: int, budget: int = CHUNK_SCORES) -> list[tuple[slice, slice]]:
    """(batch slice, query slice) of every chunk, in order: at most ``budget`` scores each (one query row at least)."""
    rows = max(1, budget // (heads * lk))
    if rows >= lq:  # whole sequences
        per = max(1, rows // lq)
        return [(slice(i, min(i + per, batch)), slice(0, lq)) for i in range(0, batch, per)]
    count = -(-lq // rows)
    rows = -(-lq // count)  # equal blocks
    return [(slice(i, i + 1), slice(j, min(j + rows, lq))) for i in range(batch) for j in range(0, lq, rows)]


def chunk_keep(seed: int, index: int, shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """Keep mask (int16, 1 = kept) of chunk ``index``: :func:`m3lit.model.dropout_mask.keep_multiplier` from
    a generator seeded with ``seed + index``."""
    return keep_multiplier(shape, p, torch.Generator().manual_seed(seed + index))


def _mask_chunk(mask: torch.Tensor | None, rows: slice, queries: slice) -> torch.Tensor | None:
    if mask is None:
        return None
    mask = mask[rows] if mask.shape[0] > 1 else mask
    return mask[..., queries, :] if mask.shape[-2] > 1 else mask


def _probs(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T + mask) of one chunk (q already scaled): (b, h, rows, d), (b, h, Lk, d) -> (b, h, rows, Lk)."""
    scores = torch.matmul(q, k.transpose(-1, -2))
    if mask is not None:
        # a boolean mask becomes additive on its own (unexpanded) shape: cheaper than a where on the scores
        scores.add_(torch.where(mask, 0.0, float("-inf")) if mask.dtype == torch.bool else mask)
    return torch.softmax(scores, dim=-1)


class _ChunkedDropoutAttention(torch.autograd.Function):
    """(B, h, Lq, d) q (already scaled), (B, h, Lk, d) k and v -> (B, Lq, h, d), chunk by chunk."""

    @staticmethod
    def forward(ctx, q, k, v, mask, p: float, seed: int, budget: int, save_max_keys: int):
        b, h, lq, _ = q.shape
        out = q.new_empty(b, lq, h, v.shape[-1])
        keeps = []
        for index, (rows, queries) in enumerate(chunks(b, h, lq, k.shape[-2], budget)):
            probs = _probs(q[rows, :, queries], k[rows], _mask_chunk(mask, rows, queries))
            keep = chunk_keep(seed, index, probs.shape, p)
            out[rows, queries] = torch.matmul(probs.mul_(keep), v[rows]).transpose(1, 2)
            if k.shape[-2] <= save_max_keys:
                keeps.append(keep)
        ctx.save_for_backward(q, k, v, mask, *keeps)
        ctx.p, ctx.seed, ctx.budget = p, seed, budget
        return out.mul_(1.0 / (1.0 - drop_probability(p)))

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, mask, *keeps = ctx.saved_tensors
        b, h, lq, _ = q.shape
        grad = grad_out.transpose(1, 2)  # (B, h, Lq, d)
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for index, (rows, queries) in enumerate(chunks(b, h, lq, k.shape[-2], ctx.budget)):
            q_c, g = q[rows, :, queries], grad[rows, :, queries]
            probs = _probs(q_c, k[rows], _mask_chunk(mask, rows, queries))
            keep = (keeps[index] if keeps else chunk_keep(ctx.seed, index, probs.shape, ctx.p)).to(
                probs.dtype
            )
            d_probs = torch.matmul(g, v[rows].transpose(-1, -2)).mul_(keep)
            d_scores = torch._softmax_backward_data(d_probs, probs, -1, probs.dtype)
            dq[rows, :, queries] = torch.matmul(d_scores, k[rows])
            dk[rows] += torch.matmul(d_scores.transpose(-1, -2), q_c)
            dv[rows] += torch.matmul(probs.mul_(keep).transpose(-1, -2), g)
        factor = 1.0 / (1.0 - drop_probability(ctx.p))
        return dq.mul_(factor), dk.mul_(factor), dv.mul_(factor), None, None, None, None, None


def dropout_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    p: float,
    budget: int = CHUNK_SCORES,
    save_max_keys: int = SAVE_MASK_MAX_KEYS,
) -> torch.Tensor:
    """Attention with dropout ``p`` (< 1) on the probabilities, chunked (module docstring).

    Args:
        q: (B, h, Lq, d) queries; k, v: (B, h, Lk, d) keys and values.
        mask: None, boolean (True = attend) or additive float mask (no gradient), broadcastable to
            (B, h, Lq, Lk) with its batch and query dimensions either full or 1.
        scale: factor on Q K^T (applied to Q: the saved scaled Q also gives dK = dS^T (scale Q)).
        p: dropout probability, realised as :func:`m3lit.model.dropout_mask.drop_probability` (p).
        budget: score elements per chunk (:func:`chunks`).
        save_max_keys: keep the drop masks for backward up to this many keys, redraw them beyond.

    Returns:
        (B, Lq, h, d) contiguous output. Chunk c's mask is :func:`chunk_keep` (seed, c, ...) for one
        ``seed = torch.randint(2**62)`` drawn from the default generator.
    """
    seed = int(torch.randint(2**62, (), dtype=torch.int64))
    return _ChunkedDropoutAttention.apply(q * scale, k, v, mask, p, seed, budget, save_max_keys)
