"""AdamW with decay / no-decay parameter groups and a warmup + decay learning-rate schedule.

As in BERT-style fine-tuning (and the HF ``Trainer`` that FlagEmbedding uses): biases and LayerNorm
weights get no weight decay; the learning rate rises linearly from 0 over the warm-up, then decays
linearly to 0 at the last step (``linear``), follows a half cosine (``cosine``), or stays (``constant``).

>>> sched = lr_lambda("linear", warmup_steps=2, total_steps=6)
>>> [round(sched(s), 2) for s in range(7)]
[0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Literal

import torch
from torch import nn

from m3lit.files.errors import UsageError

__all__ = [
    "SCHEDULES",
    "OptimizerConfig",
    "SchedulerConfig",
    "from_mapping",
    "param_groups",
    "build_optimizer",
    "lr_lambda",
    "warmup_steps_for",
]

SCHEDULES = ("linear", "cosine", "constant")
#: Parameter-name fragments that get no weight decay (biases, LayerNorm/RMSNorm weights).
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
#: Parameter-name prefixes of the scoring heads (``M3Model.sparse_head`` / ``colbert_head``), for ``head_lr_scale``.
HEADS = ("sparse_head.", "colbert_head.")


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW settings (``model.optimizer``). Defaults: HF ``TrainingArguments`` / FlagEmbedding."""

    lr: float = 5e-5  # peak learning rate (stage 1: 5e-5; stage-2 example script: 5e-6; spec §4.6)
    weight_decay: float = 0.01  # decoupled weight decay on the "decay" group (biases, norms: 0)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam moments
    eps: float = 1e-8  # Adam epsilon
    # learning rate of the sparse and ColBERT heads = lr * head_lr_scale. 1.0 = one rate for all (reference).
    # Under Adam a head moves ~lr per step whatever its gradient's size. Measured on `make train`: 100 drove
    # every lexical weight to 0 within 6 unified steps (docs/results.md), so the experiments keep 1.0.
    head_lr_scale: float = 1.0

    def __post_init__(self):
        if self.head_lr_scale <= 0:
            raise UsageError(f"model.optimizer.head_lr_scale must be > 0, got {self.head_lr_scale}")


@dataclass(frozen=True)
class SchedulerConfig:
    """Learning-rate schedule (``model.scheduler``)."""

    name: Literal["linear", "cosine", "constant"] = "linear"  # schedule after the warm-up
    warmup_steps: int | None = None  # warm-up length in optimizer steps; None: warmup_ratio * total
    warmup_ratio: float = 0.1  # warm-up as a fraction of total_steps (spec §4.6: 0.1)
    total_steps: int | None = None  # None: the trainer's max_steps (estimated stepping batches)


def from_mapping(cls, value, where: str):
    """Build the dataclass ``cls`` from a mapping, rejecting unknown keys with a message naming ``where``.

    >>> from_mapping(SchedulerConfig, {"name": "cosine"}, "model.scheduler").name
    'cosine'
    """
    if value is None or isinstance(value, cls):
        return value or cls()
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a mapping, got {type(value).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}; valid options: {sorted(known)}")
    data = dict(value)
    if "betas" in data:
        data["betas"] = tuple(data["betas"])
    return cls(**data)


def param_groups(
    module: nn.Module,
    weight_decay: float,
    no_decay: Sequence[str] = NO_DECAY,
    head_lr: float | None = None,
    heads: Sequence[str] = HEADS,
) -> list[dict]:
    """AdamW groups over the trainable parameters: with and without weight decay.

    With ``head_lr`` set, parameters whose names start with one of ``heads`` form their own groups (again split
    by decay) carrying ``lr=head_lr``; the others take the optimizer's base rate. Empty groups are dropped.
    """
    split = head_lr is not None
    buckets: dict[tuple[bool, bool], list] = {(h, d): [] for h in (False, True) for d in (True, False)}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        is_head = split and name.startswith(tuple(heads))
        decays = not any(key in name for key in no_decay)
        buckets[(is_head, decays)].append(param)
    groups = []
    for (is_head, decays), params in buckets.items():
        if not params:
            continue
        group = {"params": params, "weight_decay": weight_decay if decays else 0.0}
        if is_head:
            group["lr"] = head_lr
        groups.append(group)
    return groups


def build_optimizer(
    params: Iterable[dict],
    lr: float,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over ``params`` (groups from :func:`param_groups`).

    ``fused=None`` picks torch's fused kernel when every parameter is a floating-point CPU or CUDA tensor,
    as the HF Trainer behind FlagEmbedding does (``adamw_torch_fused``, its default for torch >= 2.8).
    Same update rule; on CPU it is several times faster than the per-tensor loop torch uses otherwise,
    which matters for the 250k-row embedding matrix (benchmarks/train.py, README "Performance").
    ``M3LitModule`` passes ``fused=False`` under fp16 loss scaling only, where Lightning refuses to clip
    (after unscaling) the gradients of an optimizer that unscales them itself.
    """
    if lr <= 0:
        raise UsageError(f"optimizer.lr must be > 0, got {lr}")
    groups = list(params)
    if fused is None:
        tensors = [p for group in groups for p in group["params"]]
        fused = bool(tensors) and all(
            p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors
        )
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused)


def warmup_steps_for(total_steps: int, warmup_steps: int | None, warmup_ratio: float) -> int:
    """``warmup_steps`` if given, else ``ceil(warmup_ratio * total_steps)`` (HF Trainer's rule)."""
    if warmup_steps is not None:
        if warmup_steps < 0:
            raise UsageError(f"scheduler.warmup_steps must be >= 0, got {warmup_steps}")
        return warmup_steps
    if not 0.0 <= warmup_ratio <= 1.0:
        raise UsageError(f"scheduler.warmup_ratio must be in [0, 1], got {warmup_ratio}")
    return math.ceil(warmup_ratio * total_steps)


def lr_lambda(name: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step ``s`` (for ``LambdaLR``)."""
    if name not in SCHEDULES:
        raise UsageError(f"scheduler.name must be one of {SCHEDULES}, got {name!r}")
    if total_steps <= 0:
        raise ValueError(f"the schedule needs a positive number of training steps, got {total_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        if name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if name == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
