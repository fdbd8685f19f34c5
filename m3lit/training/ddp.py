"""``M3DDPStrategy``: Lightning's DDP with ``find_unused_parameters`` decided by the stage schedule.

DDP must be told to look for parameters without gradient when some exist, or the next step fails; looking
for them when none exist costs an extra traversal of the autograd graph every step, and PyTorch then warns
on every rank. In BGE-M3 training (arXiv:2402.03216 App. B.1) only the dense-only stage 1 leaves parameters
unused: the sparse and ColBERT heads are not computed; so does any head subset lacking one of them. With ``find_unused_parameters="auto"`` the strategy
turns the search on exactly when the run has such a stage (the module's initial stage, or a
:class:`~m3lit.callbacks.stage_switch.StageSwitch` entry), says so once on rank 0, and silences PyTorch's
per-rank "did not find any unused parameters" warning of the later unified steps, which the choice already
accounts for. ``True`` / ``False`` are passed to ``DistributedDataParallel`` unchanged.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_info

from m3lit.training.stages import ScheduleEntry, stage_spec

__all__ = ["M3DDPStrategy", "run_stages"]


def run_stages(trainer: Any, module: Any) -> list[str]:
    """Every stage the run can train in: the module's current stage plus every scheduled stage.

    A callback that switches stages (:class:`~m3lit.callbacks.stage_switch.StageSwitch`) holds its schedule
    as ``entries``, a list of :class:`~m3lit.training.stages.ScheduleEntry`; it is read from there, so this
    layer needs no import of the callbacks above it.
    """
    stages = [module.stage] if hasattr(module, "stage") else []
    for callback in trainer.callbacks:
        entries = getattr(callback, "entries", None)
        if isinstance(entries, list):
            stages += [entry.stage for entry in entries if isinstance(entry, ScheduleEntry)]
    return list(dict.fromkeys(stages))


class M3DDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose ``find_unused_parameters`` may be ``"auto"`` (module docstring).

    Args:
        find_unused_parameters: ``"auto"`` (on when a stage leaves the sparse/ColBERT heads unused),
            True or False.
        kwargs: :class:`~lightning.pytorch.strategies.DDPStrategy` arguments (``start_method``,
            ``process_group_backend``, ``gradient_as_bucket_view``, ...).
    """

    def __init__(self, *, find_unused_parameters: bool | Literal["auto"] = "auto", **kwargs: Any) -> None:
        if find_unused_parameters not in (True, False, "auto"):
            raise ValueError(
                f"find_unused_parameters must be true, false or auto, got {find_unused_parameters!r}"
            )
        super().__init__(**kwargs)
        self.find_unused = find_unused_parameters

    def configure_ddp(self) -> None:
        find = self.find_unused
        if find == "auto":
            module = self.lightning_module
            stages = run_stages(module.trainer, module)
            partial = [s for s in stages if not (stage_spec(s).sparse and stage_spec(s).colbert)]
            find = bool(partial)
            if find:
                rank_zero_info(
                    f"DDP find_unused_parameters=True: stage(s) {partial} leave the sparse and/or ColBERT "
                    "head without gradient (one extra autograd pass per step)"
                )
                warnings.filterwarnings("ignore", message=".*find_unused_parameters=True was specified")
        self._ddp_kwargs["find_unused_parameters"] = find
        super().configure_ddp()
