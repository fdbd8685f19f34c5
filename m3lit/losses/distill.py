"""Distillation from external teacher scores (FlagEmbedding's ``pos_scores``/``neg_scores``; spec §3.2).

The teacher distribution over a query's group is t_b = softmax(teacher_scores_b) over the float teacher
scores, without temperature (integer scores are cast first: FlagEmbedding issue #1471). Student scores are
raw (B, Q*G) matrices as in :mod:`m3lit.losses.infonce`; logits are scores / tau.

Two losses, selected by name in :data:`KD_LOSSES`:

* ``m3_kd_loss`` (listwise, the one BGE-M3's recipe uses): for i = 0..G-1 the i-th group member must beat every
  passage in the matrix except the group members before it, weighted by t_b,i:
  L = sum_i mean_b t_b,i * CE(logits_b with columns c_b,0..c_b,i-1 masked, c_b,i), c_b,i = (offset + b)*G + i.
  It is summed (not averaged) over i, and the i = 0 term plays the role of plain InfoNCE. The group order
  matters: FlagEmbedding's research code sorts negatives by teacher score, descending.
* ``kl_div`` (a misnomer kept for config compatibility): soft-target cross-entropy over the query's own
  group, -mean_b sum_j t_b,j log softmax(own-group logits)_b,j, PLUS the ordinary InfoNCE.

With ``in_batch_negatives=False`` both work on the own-group (B, G) logits only, with group positions
0..G-1 as targets (the reference builds out-of-range targets there, spec §3.6).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from m3lit.losses.infonce import as_float, check_score_matrix, check_temperature, info_nce, own_group_scores
from m3lit.losses.self_distill import soft_cross_entropy

__all__ = ["teacher_distribution", "m3_kd_loss", "kl_div_loss", "KD_LOSSES"]


def teacher_distribution(teacher_scores: torch.Tensor, num_queries: int, group_size: int) -> torch.Tensor:
    """softmax over each query's G float teacher scores -> (B, G) detached probabilities.

    Raises:
        ValueError: ``teacher_scores`` is not (num_queries, group_size) or holds non-finite values.
    """
    if not isinstance(teacher_scores, torch.Tensor):
        teacher_scores = torch.as_tensor(teacher_scores)
    if tuple(teacher_scores.shape) != (num_queries, group_size):
        raise ValueError(
            f"teacher_scores must be (B, G) = ({num_queries}, {group_size}), got {tuple(teacher_scores.shape)}"
        )
    scores = as_float(teacher_scores.detach())  # integer teacher scores would break softmax (issue #1471)
    if not torch.isfinite(scores).all():
        raise ValueError("teacher_scores hold NaN or infinite values")
    return torch.softmax(scores, dim=-1)


def m3_kd_loss(
    scores: torch.Tensor,
    teacher: torch.Tensor,
    group_size: int,
    *,
    temperature: float = 0.02,
    query_offset: int = 0,
    in_batch_negatives: bool = True,
) -> torch.Tensor:
    """Listwise teacher-weighted InfoNCE with progressive masking (spec §3.2); returns a scalar.

    Args:
        scores: (B, Q*G) raw student scores.
        teacher: (B, G) teacher probabilities (:func:`teacher_distribution`).
        group_size: G.
        temperature: tau; logits are scores / tau.
        query_offset: first local query's group index in the columns (rank * B for gathered matrices).
        in_batch_negatives: False scores each query against its own group only.
    """
    check_temperature(temperature)
    check_score_matrix("m3_kd_loss", scores, group_size, query_offset)
    _check_teacher(teacher, scores.shape[0], group_size)
    logits = as_float(scores) / temperature
    if in_batch_negatives:
        first = (torch.arange(scores.shape[0], device=scores.device) + query_offset) * group_size  # (B,)
    else:
        logits = own_group_scores(logits, group_size, query_offset)  # (B, G)
        first = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    columns = torch.arange(logits.shape[1], device=logits.device)  # (N,)
    offset_in_group = columns[None, :] - first[:, None]  # (B, N): position of each column in the own group
    fill = torch.finfo(logits.dtype).min
    loss = logits.new_zeros(())
    for i in range(group_size):
        masked = logits.masked_fill(
            (offset_in_group >= 0) & (offset_in_group < i), fill
        )  # earlier members out
        ce = F.cross_entropy(masked, first + i, reduction="none")  # (B,)
        loss = loss + (teacher[:, i].to(ce.dtype) * ce).mean()
    return loss


def kl_div_loss(
    scores: torch.Tensor,
    teacher: torch.Tensor,
    group_size: int,
    *,
    temperature: float = 0.02,
    query_offset: int = 0,
    in_batch_negatives: bool = True,
) -> torch.Tensor:
    """Soft-target CE over the own group plus plain InfoNCE (FlagEmbedding's ``kl_div``); returns a scalar.

    Arguments as :func:`m3_kd_loss`.
    """
    check_temperature(temperature)
    check_score_matrix("kl_div_loss", scores, group_size, query_offset)
    _check_teacher(teacher, scores.shape[0], group_size)
    own = own_group_scores(as_float(scores) / temperature, group_size, query_offset)  # (B, G)
    distill = soft_cross_entropy(own, teacher)
    contrastive = info_nce(
        scores,
        group_size,
        temperature=temperature,
        query_offset=query_offset,
        in_batch_negatives=in_batch_negatives,
    )
    return distill + contrastive


#: Teacher-score losses by config name (``kd_loss`` argument of :func:`m3lit.losses.m3_loss`).
KD_LOSSES: dict[str, Callable[..., torch.Tensor]] = {"m3_kd_loss": m3_kd_loss, "kl_div": kl_div_loss}


def _check_teacher(teacher: torch.Tensor, num_queries: int, group_size: int) -> None:
    if tuple(teacher.shape) != (num_queries, group_size):
        raise ValueError(
            f"teacher distribution must be (B, G) = ({num_queries}, {group_size}), got {tuple(teacher.shape)}"
        )
