"""The training system: LightningModule, sub-batching (split-batch, gradient cache), cross-device
negatives, stages, optimiser and schedule helpers. Heavy imports are left to the submodules."""

from m3lit.training.stages import STAGES, ScheduleEntry, StageSpec, parse_schedule, stage_spec

__all__ = ["STAGES", "ScheduleEntry", "StageSpec", "parse_schedule", "stage_spec"]
