"""Training stages and the step schedule that moves between them.

BGE-M3, arXiv:2402.03216 App. B.1: stage 1 trains the dense head alone (InfoNCE, Eq. (1)) on weakly
supervised pairs; stage 2 trains all three heads on labelled data, first with per-head InfoNCE plus the
ensemble s_inter (Eq. (2)) for a warm-up (~6000 steps), then with self-knowledge distillation added
(Eq. (3)-(4)). Each stage is a loss mode of :class:`~m3lit.training.lit_module.M3LitModule`.

>>> parse_schedule({0: "dense", "20": {"stage": "unified", "source": "labelled"}})
[ScheduleEntry(step=0, stage='dense', source=None), ScheduleEntry(step=20, stage='unified', source='labelled')]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["STAGES", "StageSpec", "ScheduleEntry", "stage_spec", "parse_schedule"]


@dataclass(frozen=True)
class StageSpec:
    """What a stage computes: which heads are encoded and scored, and whether self-distillation is on."""

    sparse: bool
    colbert: bool
    self_distill: bool


#: name -> spec. ``dense``: stage 1 (dense InfoNCE only; sparse/ColBERT heads are not even computed).
#: ``unified``: Eq. (1) per head + s_inter. ``unified_self_distill``: the same plus Eq. (3)-(4).
STAGES: dict[str, StageSpec] = {
    "dense": StageSpec(sparse=False, colbert=False, self_distill=False),
    "unified": StageSpec(sparse=True, colbert=True, self_distill=False),
    "unified_self_distill": StageSpec(sparse=True, colbert=True, self_distill=True),
}


def stage_spec(name: str) -> StageSpec:
    """The :class:`StageSpec` of ``name``; a clear error for an unknown name."""
    if name not in STAGES:
        raise ValueError(f"unknown training stage {name!r}; choose one of {sorted(STAGES)}")
    return STAGES[name]


@dataclass(frozen=True)
class ScheduleEntry:
    """From global step ``step`` on, train in ``stage``; switch the data source to ``source`` if not None."""

    step: int
    stage: str
    source: str | None = None


def parse_schedule(schedule: Mapping) -> list[ScheduleEntry]:
    """Validate a ``{step: stage}`` or ``{step: {stage: ..., source: ...}}`` mapping, sorted by step.

    Rules (each violation raises ``ValueError`` naming the offending entry): steps are integers >= 0 (YAML
    and command-line keys may arrive as strings), step 0 must be present so the first stage is explicit,
    stage names are known, the mapping form has only ``stage`` and ``source`` keys, and consecutive entries
    differ (a switch to the same stage and source would be a silent no-op, usually a typo).
    """
    if not isinstance(schedule, Mapping) or not schedule:
        raise ValueError(f"stage schedule must be a non-empty mapping {{step: stage}}, got {schedule!r}")
    entries: dict[int, ScheduleEntry] = {}
    for raw_step, value in schedule.items():
        try:
            step = int(str(raw_step))
        except ValueError:
            raise ValueError(f"stage schedule: step {raw_step!r} is not an integer") from None
        if step < 0:
            raise ValueError(f"stage schedule: step {step} is negative")
        if step in entries:
            raise ValueError(f"stage schedule: step {step} is given twice")
        if isinstance(value, str):
            stage, source = value, None
        elif isinstance(value, Mapping):
            unknown = set(value) - {"stage", "source"}
            if unknown or "stage" not in value:
                raise ValueError(
                    f"stage schedule: entry {step} must be a stage name or {{stage: NAME, source: NAME}}, "
                    f"got keys {sorted(map(str, value))}"
                )
            stage, source = value["stage"], value.get("source")
            if source is not None and not isinstance(source, str):
                raise ValueError(f"stage schedule: entry {step} has a non-string source {source!r}")
        else:
            raise ValueError(f"stage schedule: entry {step} must be a stage name or a mapping, got {value!r}")
        if stage not in STAGES:
            raise ValueError(
                f"stage schedule: entry {step} names unknown stage {stage!r}; choose one of {sorted(STAGES)}"
            )
        entries[step] = ScheduleEntry(step, stage, source)
    if 0 not in entries:
        raise ValueError(f"stage schedule must start at step 0, got steps {sorted(entries)}")
    ordered = [entries[s] for s in sorted(entries)]
    for prev, cur in zip(ordered, ordered[1:], strict=False):
        if cur.stage == prev.stage and cur.source in (None, prev.source):
            raise ValueError(
                f"stage schedule: entry {cur.step} repeats stage {cur.stage!r} of entry {prev.step}"
            )
    return ordered
