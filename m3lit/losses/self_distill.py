"""Self-knowledge distillation (BGE-M3, arXiv:2402.03216 §3.3 Eq. (3)).

The ensemble score s_inter (Eq. (2)) is the teacher of each head: its tempered softmax, DETACHED, is the soft
target of a cross-entropy on the head's tempered scores,

    L'_x = -1/B sum_b sum_j softmax(s_inter / tau)_b,j * log softmax(s_x / tau)_b,j.

This is the KL divergence to the teacher up to the teacher's entropy (a constant), so the student gradients
are those of the KL.
"""

from __future__ import annotations

import torch

from m3lit.losses.infonce import as_float, check_temperature

__all__ = ["soft_cross_entropy", "self_distill_loss"]


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """-mean_b sum_j p_b,j log softmax(logits)_b,j for (B, N) logits and (B, N) target probabilities."""
    if logits.shape != target_probs.shape:
        raise ValueError(
            f"soft_cross_entropy: logits {tuple(logits.shape)} and targets {tuple(target_probs.shape)} differ"
        )
    log_probs = torch.log_softmax(as_float(logits), dim=-1)
    return -(target_probs.to(log_probs.dtype) * log_probs).sum(-1).mean()


def self_distill_loss(
    student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 0.02
) -> torch.Tensor:
    """Eq. (3): CE of the student's tempered scores against softmax(teacher / tau), teacher detached.

    Args:
        student: (B, N) raw scores of one head (dense, lexical or multi-vector).
        teacher: (B, N) raw ensemble scores s_inter over the same passages.
        temperature: tau applied to both (the reference tempers every score before the ensemble).

    Returns:
        A scalar; no gradient reaches ``teacher``.
    """
    check_temperature(temperature)
    if student.shape != teacher.shape:
        raise ValueError(
            f"self_distill_loss: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ"
        )
    target = torch.softmax(as_float(teacher.detach()) / temperature, dim=-1)
    return soft_cross_entropy(as_float(student) / temperature, target)
