"""BGE-M3 losses on raw score matrices (no model inside): InfoNCE, teacher distillation, self-distillation,
and the unified loss ``m3_loss`` (arXiv:2402.03216 §3.3)."""

from __future__ import annotations

from m3lit.losses.distill import KD_LOSSES, kl_div_loss, m3_kd_loss, teacher_distribution
from m3lit.losses.infonce import group_targets, info_nce, own_group_scores
from m3lit.losses.m3 import M3LossOutput, M3LossWeights, m3_loss
from m3lit.losses.self_distill import self_distill_loss, soft_cross_entropy

__all__ = [
    "m3_loss",
    "M3LossWeights",
    "M3LossOutput",
    "info_nce",
    "own_group_scores",
    "group_targets",
    "m3_kd_loss",
    "kl_div_loss",
    "teacher_distribution",
    "KD_LOSSES",
    "self_distill_loss",
    "soft_cross_entropy",
]
