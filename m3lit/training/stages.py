"""Training stages and the step schedule that moves between them.

BGE-M3, arXiv:2402.03216 App. B.1: stage 1 trains the dense head alone (InfoNCE, Eq. (1)) on weakly
supervised pairs; stage 2 trains all three heads on labelled data, first with per-head InfoNCE plus the
ensemble s_inter (Eq. (2)) for a warm-up (~6000 steps), then with self-knowledge distillation added
(Eq. (3)-(4)). Each stage is a loss mode of :class:`~m3lit.training.lit_module.M3LitModule`.

A stage is any non-empty set of heads (``dense``, ``sparse``, ``colbert``) plus a self-distillation switch
(:class:`StageSpec`; how the loss restricts to a subset: :func:`m3lit.losses.m3_loss`). It is written as

* a preset name: ``dense`` ({dense}), ``unified`` (all three), ``unified_self_distill`` (all three + Eq. (3)-(4));
* a mapping ``{heads: [dense, sparse], self_distill: true}`` (``self_distill`` defaults to false);
* its canonical name, the heads joined by ``+`` in the order dense, sparse, colbert, plus ``+self_distill``
  when on (``dense+sparse+self_distill``); the presets' canonical names are the preset names.

Every form is stored as the canonical name (a plain string: checkpoints, logs, StageSwitch state).

>>> stage_name({"heads": ["sparse", "dense"], "self_distill": True})
'dense+sparse+self_distill'
>>> stage_name({"heads": ["colbert", "sparse", "dense"]}), stage_name("dense+sparse+colbert")
('unified', 'unified')
>>> parse_schedule({0: "dense", "20": {"stage": "unified", "source": "labelled"}, 40: {"heads": ["sparse"]}})[1:]
[ScheduleEntry(step=20, stage='unified', source='labelled'), ScheduleEntry(step=40, stage='sparse', source=None)]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from m3lit.losses.m3 import HEADS

__all__ = ["HEADS", "STAGES", "StageSpec", "ScheduleEntry", "stage_spec", "stage_name", "parse_schedule"]

SELF_DISTILL = "self_distill"


@dataclass(frozen=True)
class StageSpec:
    """What a stage computes: which heads are encoded and scored, and whether self-distillation is on.

    Only the chosen heads are computed; self-distillation needs at least two heads (the ensemble teacher of a
    single head is that head itself).
    """

    sparse: bool
    colbert: bool
    self_distill: bool
    dense: bool = True

    def __post_init__(self) -> None:
        if not self.heads:
            raise ValueError(f"a stage needs at least one head of {list(HEADS)}, got none")
        if self.self_distill and len(self.heads) < 2:
            raise ValueError(
                f"self_distill needs at least two heads (the ensemble s_inter of one head is the head "
                f"itself), got heads {list(self.heads)}"
            )

    @property
    def heads(self) -> tuple[str, ...]:
        """The chosen heads in canonical order."""
        return tuple(h for h in HEADS if getattr(self, h))

    @property
    def name(self) -> str:
        """Canonical name (module docstring): a preset name when the spec is a preset's."""
        for preset, spec in STAGES.items():
            if spec == self:
                return preset
        return "+".join(self.heads + ((SELF_DISTILL,) if self.self_distill else ()))

    @classmethod
    def of(cls, heads, self_distill: bool = False) -> StageSpec:
        """The spec of an iterable of head names; unknown, repeated or no heads: ``ValueError`` naming them."""
        if isinstance(heads, str) or not hasattr(heads, "__iter__"):
            raise ValueError(f"stage heads must be a list of head names from {list(HEADS)}, got {heads!r}")
        heads = list(heads)
        unknown = [h for h in heads if h not in HEADS]
        if unknown:
            raise ValueError(f"stage heads: unknown head(s) {unknown}; choose from {list(HEADS)}")
        if len(set(heads)) != len(heads):
            raise ValueError(f"stage heads: a head is given twice in {heads}")
        if not isinstance(self_distill, bool):
            raise ValueError(f"stage self_distill must be true or false, got {self_distill!r}")
        chosen = set(heads)
        return cls(
            dense="dense" in chosen,
            sparse="sparse" in chosen,
            colbert="colbert" in chosen,
            self_distill=self_distill,
        )


#: name -> spec. ``dense``: stage 1 (dense InfoNCE only; sparse/ColBERT heads are not even computed).
#: ``unified``: Eq. (1) per head + s_inter. ``unified_self_distill``: the same plus Eq. (3)-(4).
STAGES: dict[str, StageSpec] = {
    "dense": StageSpec(sparse=False, colbert=False, self_distill=False),
    "unified": StageSpec(sparse=True, colbert=True, self_distill=False),
    "unified_self_distill": StageSpec(sparse=True, colbert=True, self_distill=True),
}

#: Keys of the mapping form of a stage.
STAGE_KEYS = ("heads", SELF_DISTILL)


def stage_spec(stage: str | Mapping[str, Any] | StageSpec) -> StageSpec:
    """The :class:`StageSpec` of a preset or canonical name, a ``{heads, self_distill}`` mapping or a spec.

    Raises:
        ValueError: an unknown name, an unknown or empty head list, unknown mapping keys, or self_distill
            with a single head; the message names the offending value.
    """
    if isinstance(stage, StageSpec):
        return stage
    if isinstance(stage, Mapping):
        unknown = sorted(set(map(str, stage)) - set(STAGE_KEYS))
        if unknown or "heads" not in stage:
            raise ValueError(
                f"a stage mapping needs 'heads' (and optionally 'self_distill'), got keys {sorted(map(str, stage))}"
            )
        return StageSpec.of(stage["heads"], stage.get(SELF_DISTILL, False))
    if not isinstance(stage, str):
        raise ValueError(f"a stage is a name or {{heads: [...], self_distill: bool}}, got {stage!r}")
    if stage in STAGES:
        return STAGES[stage]
    parts = stage.split("+")
    distill = parts[-1] == SELF_DISTILL
    heads = parts[:-1] if distill else parts
    if "+" not in stage and stage not in HEADS:
        raise ValueError(
            f"unknown training stage {stage!r}; choose one of {sorted(STAGES)}, a head set such as "
            "'dense+sparse', or {heads: [...], self_distill: bool}"
        )
    return StageSpec.of(heads, distill)


def stage_name(stage: str | Mapping[str, Any] | StageSpec) -> str:
    """The canonical name of any stage form (validated by :func:`stage_spec`)."""
    return stage_spec(stage).name


@dataclass(frozen=True)
class ScheduleEntry:
    """From global step ``step`` on, train in ``stage`` (canonical name); switch the data source to
    ``source`` if not None."""

    step: int
    stage: str
    source: str | None = None


def parse_schedule(schedule: Mapping) -> list[ScheduleEntry]:
    """Validate a ``{step: stage}`` mapping, sorted by step.

    A value is a stage in any form of the module docstring (a name or ``{heads: [...], self_distill: ...}``),
    or ``{stage: STAGE, source: NAME}``, or ``{heads: [...], self_distill: ..., source: NAME}``.

    Rules (each violation raises ``ValueError`` naming the offending entry): steps are integers >= 0 (YAML
    and command-line keys may arrive as strings), step 0 must be present so the first stage is explicit,
    stages are valid, the mapping form has only ``stage`` or ``heads``/``self_distill``, and ``source`` keys,
    and consecutive entries differ (a switch to the same stage and source would be a silent no-op, usually
    a typo).
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
            keys = set(map(str, value))
            inline = keys & set(STAGE_KEYS)
            if keys - {"stage", "source", *STAGE_KEYS} or ("stage" in keys) == bool(inline):
                raise ValueError(
                    f"stage schedule: entry {step} must be a stage name, {{stage: NAME, source: NAME}} or "
                    f"{{heads: [...], self_distill: BOOL, source: NAME}}, got keys {sorted(keys)}"
                )
            stage = {k: value[k] for k in inline} if inline else value["stage"]
            source = value.get("source")
            if source is not None and not isinstance(source, str):
                raise ValueError(f"stage schedule: entry {step} has a non-string source {source!r}")
        else:
            raise ValueError(f"stage schedule: entry {step} must be a stage name or a mapping, got {value!r}")
        try:
            name = stage_name(stage)
        except ValueError as error:
            raise ValueError(f"stage schedule: entry {step}: {error}") from None
        entries[step] = ScheduleEntry(step, name, source)
    if 0 not in entries:
        raise ValueError(f"stage schedule must start at step 0, got steps {sorted(entries)}")
    ordered = [entries[s] for s in sorted(entries)]
    for prev, cur in zip(ordered, ordered[1:], strict=False):
        if cur.stage == prev.stage and cur.source in (None, prev.source):
            raise ValueError(
                f"stage schedule: entry {cur.step} repeats stage {cur.stage!r} of entry {prev.step}"
            )
    return ordered
