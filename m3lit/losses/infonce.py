"""InfoNCE over in-batch + hard negatives (BGE-M3, arXiv:2402.03216 §3.3 Eq. (1)).

Score matrices are RAW (un-tempered) (B, N) matrices of B local queries against N = Q*G passages laid out
[pos, neg_1..neg_{G-1}] per query, where Q >= B counts every query whose group is in the matrix: Q = B for a
local matrix, Q = W*B for a cross-device gathered one. Local query b owns the passages
[(query_offset + b)*G, (query_offset + b + 1)*G), its positive first; ``query_offset`` is rank*B for a
gathered matrix and 0 otherwise.

L = -1/B sum_b log( exp(s_b,pos / tau) / sum_j exp(s_b,j / tau) ), with j over every passage in the matrix
(in-batch negatives) or, with ``in_batch_negatives=False``, over the query's own group only (target 0:
FlagEmbedding's ``no_in_batch_neg`` datasets, done right, spec §3.6).

Relations: equals sentence-transformers' MultipleNegativesRankingLoss with scale = 1/tau when G = 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "info_nce",
    "own_group_scores",
    "group_targets",
    "check_score_matrix",
    "check_temperature",
    "as_float",
]


def check_score_matrix(name: str, scores: torch.Tensor, group_size: int, query_offset: int = 0) -> int:
    """Validate a (B, Q*G) score matrix; return Q, the number of query groups its columns hold.

    Raises:
        ValueError: not 2-D, group size not a positive int, columns not a multiple of G, or the local queries'
            groups [query_offset, query_offset + B) not inside the matrix.
    """
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if scores.dim() != 2:
        raise ValueError(
            f"{name} scores must be a 2-D (queries, passages) matrix, got shape {tuple(scores.shape)}"
        )
    n_rows, n_cols = scores.shape
    if n_cols % group_size:
        raise ValueError(
            f"{name} scores: group_size={group_size} does not divide the {n_cols} passage columns "
            f"(shape {tuple(scores.shape)})"
        )
    groups = n_cols // group_size
    if query_offset < 0 or query_offset + n_rows > groups:
        raise ValueError(
            f"{name} scores {tuple(scores.shape)}: {n_rows} queries at query_offset={query_offset} need "
            f"{(query_offset + n_rows) * group_size} passage columns with group_size={group_size}"
        )
    return groups


def group_targets(num_queries: int, group_size: int, query_offset: int = 0, device=None) -> torch.Tensor:
    """(B,) column of each local query's positive: (query_offset + b) * G."""
    return (torch.arange(num_queries, device=device) + query_offset) * group_size


def own_group_scores(scores: torch.Tensor, group_size: int, query_offset: int = 0) -> torch.Tensor:
    """(B, Q*G) -> (B, G): each local query's scores against its own group [pos, negs] (differentiable)."""
    groups = check_score_matrix("own_group_scores", scores, group_size, query_offset)
    rows = torch.arange(scores.shape[0], device=scores.device)
    return scores.reshape(scores.shape[0], groups, group_size)[rows, rows + query_offset]  # (B, G)


def info_nce(
    scores: torch.Tensor,
    group_size: int,
    *,
    temperature: float = 0.02,
    query_offset: int = 0,
    in_batch_negatives: bool = True,
) -> torch.Tensor:
    """InfoNCE (Eq. (1)) of raw (B, Q*G) scores; returns a scalar (mean over the B local queries).

    Args:
        scores: (B, Q*G) raw scores, passages [pos, negs] per query group.
        group_size: G, passages per query.
        temperature: tau; logits are scores / tau (0.02 in BGE-M3).
        query_offset: index of the first local query's group in the columns (rank * B when gathered).
        in_batch_negatives: False restricts each query to its own group (B, G) with target 0.

    >>> s = torch.tensor([[0.1, 0.1, 0.1, 0.1]])              # 1 query, G = 2, with a gathered other group
    >>> round(info_nce(s, 2, temperature=0.1, query_offset=1).item(), 4)   # -log(1/4): all tied
    1.3863
    >>> round(info_nce(s, 2, temperature=0.1, query_offset=1, in_batch_negatives=False).item(), 4)  # log 2
    0.6931
    """
    check_temperature(temperature)
    check_score_matrix("info_nce", scores, group_size, query_offset)
    logits = as_float(scores) / temperature
    if not in_batch_negatives:
        own = own_group_scores(logits, group_size, query_offset)  # (B, G)
        return F.cross_entropy(own, torch.zeros(own.shape[0], dtype=torch.long, device=own.device))
    return F.cross_entropy(logits, group_targets(scores.shape[0], group_size, query_offset, scores.device))


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Losses are computed in at least float32 (half-precision scores / 0.02 lose too much), float64 kept."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
