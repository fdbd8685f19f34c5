"""From concatenated representations to the BGE-M3 loss of one step (scores + ``m3_loss``).

BGE-M3, arXiv:2402.03216 §3.2 (scores) and §3.3 (Eq. (1)-(4) via :func:`m3lit.losses.m3_loss`). The
stage decides which heads are scored and whether self-distillation runs; cross-device negatives gather
the passages of every rank for the dense scores (reference behaviour) and, optionally, for the sparse
and ColBERT scores too. Scores are computed in float32 with autocast off, so mixed precision changes the
encoder's arithmetic but never the loss's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext

import torch

from m3lit.losses import m3_loss
from m3lit.losses.m3 import HEADS
from m3lit.model import M3Output
from m3lit.scores import colbert_scores, dense_scores, sparse_scores
from m3lit.training.cross_device import all_gather_sizes, dist_info, gather_no_grad, gather_with_grad
from m3lit.training.reps import present_fields
from m3lit.training.stages import StageSpec

__all__ = ["CROSS_DEVICE_HEADS", "m3_objective", "NonFiniteLossError", "check_finite"]

CROSS_DEVICE_HEADS = HEADS


class NonFiniteLossError(FloatingPointError):
    """A loss (part) became NaN or inf; raised before any backward so the weights stay good."""


def check_finite(loss: torch.Tensor, parts: Mapping[str, torch.Tensor], step: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the step and every non-finite loss part."""
    values = {"loss": loss, **parts}
    bad = {k: float(v.detach()) for k, v in values.items() if not bool(torch.isfinite(v.detach()).all())}
    if bad:
        good = {k: round(float(v.detach()), 6) for k, v in values.items() if k not in bad}
        parts_bad = [k for k in bad if k != "loss"] or ["loss"]
        raise NonFiniteLossError(
            f"non-finite loss at global step {step}: loss part(s) {', '.join(parts_bad)} = "
            f"{', '.join(f'{k}={v}' for k, v in bad.items())} (finite: {good}). The optimizer step was skipped; "
            "resume from the last good checkpoint with a lower learning rate or mixed precision off."
        )


def _autocast_off(device: torch.device):
    return (
        torch.autocast(device_type=device.type, enabled=False)
        if device.type in ("cuda", "cpu")
        else nullcontext()
    )


def m3_objective(
    q: M3Output,
    p: M3Output,
    *,
    group_size: int,
    stage: StageSpec,
    loss_kwargs: Mapping | None = None,
    teacher_scores: torch.Tensor | None = None,
    in_batch_negatives: bool = True,
    negatives_cross_device: bool = False,
    cross_device_heads: Sequence[str] = ("dense",),
    pad_token_id: int = 1,
):
    """Score B queries against the passages and return ``m3_loss(...)`` (an ``M3LossOutput``).

    Args:
        q: (B, ...) query representations, at least those of the stage's heads (the others are not scored).
        p: (B*G, ...) passage representations, [pos, negs] per query.
        group_size: G.
        stage: which heads are scored (only those) and whether self-distillation is on.
        loss_kwargs: the ``loss`` config (temperature, weights, kd_loss, ...), passed to ``m3_loss``.
        teacher_scores: (B, G) teacher scores or None.
        in_batch_negatives: False for ``no_in_batch_neg`` datasets (own group only; nothing is gathered).
        negatives_cross_device: score against the passages of all ranks (W*B*G columns).
        cross_device_heads: which heads' passages are gathered (``dense`` is the reference; adding
            ``sparse``/``colbert`` extends it).
        pad_token_id: fill for gathered token ids of different lengths.
    """
    unknown = set(cross_device_heads) - set(CROSS_DEVICE_HEADS)
    if unknown:
        raise ValueError(
            f"cross_device_heads: unknown head(s) {sorted(unknown)}; choose from {CROSS_DEVICE_HEADS}"
        )
    gather = negatives_cross_device and in_batch_negatives and dist_info()[1] > 1
    first = getattr(q, present_fields(q)[0])  # (B, ...) any representation: its rows are the queries
    device = first.device
    query_offset = 0
    if gather:
        rank = dist_info()[0]
        query_offset = sum(s[0] for s in all_gather_sizes((first.shape[0],), device)[:rank])

    def maybe_gather(head: str, tensor: torch.Tensor, value=0.0, grad: bool = True) -> torch.Tensor:
        if not (gather and head in cross_device_heads):
            return tensor
        return gather_with_grad(tensor, value) if grad else gather_no_grad(tensor, value)

    with _autocast_off(device):
        dense = sparse = colbert = None
        if stage.dense:
            dense = dense_scores(q.dense.float(), maybe_gather("dense", p.dense.float()))
        if stage.sparse:
            sparse = sparse_scores(
                q.sparse_weights.float(),
                q.token_ids,
                maybe_gather("sparse", p.sparse_weights.float()),
                maybe_gather("sparse", p.token_ids, pad_token_id, grad=False),
            )
        if stage.colbert:
            colbert = colbert_scores(
                q.colbert.float(),
                q.colbert_mask,
                maybe_gather("colbert", p.colbert.float()),
                maybe_gather("colbert", p.colbert_mask, False, grad=False),
            )
        return m3_loss(
            dense,
            sparse,
            colbert,
            group_size,
            self_distill=stage.self_distill,
            teacher_scores=None if teacher_scores is None else teacher_scores.float(),
            query_offset=query_offset,
            in_batch_negatives=in_batch_negatives,
            **dict(loss_kwargs or {}),
        )
