"""Safe resume: ``python -m m3lit.train resume=<run dir> [safe overrides]`` continues a run as it was configured.

A resume reloads the run's own resolved ``<run dir>/config.yaml`` (never the defaults of ``configs/``), and
continues from ``<run dir>/checkpoints/last.ckpt`` into the same folder. ``ckpt_path=<run
dir>/checkpoints/<file>.ckpt`` (the older spelling) is recognised the same way: its run folder is the
checkpoint folder's parent when that holds a ``config.yaml``.

The run's own command plus ``ckpt_path`` resumes too: a group choice (``experiment=demo``) equal to the
one recorded in ``<run dir>/.hydra/hydra.yaml`` and a value equal to the saved one change nothing; a
differing group choice is refused, naming the saved and the new choice.

Command-line overrides may only change keys of :data:`RESUME_SAFE_KEYS`: they change how the run is
watched or where it runs, never the function being trained. Any other change (``trainer.max_steps``, the
LR schedule, optimizer, data, model, loss, seed) is refused with a message naming the key, the saved and
the new value in one sentence per key with the hint for that key, unless
``resume.allow_schedule_change=true`` is passed (see :func:`describe_schedule_change`
for what that does). Everything is checked before anything is written, and ``config.yaml`` is replaced
atomically; ``.hydra/`` is never touched (a resume does not go through ``@hydra.main``).

Logs continue: :func:`keep_csv_rows` keeps ``csv/metrics.csv``'s rows up to the resumed step (Lightning's
CSV logger deletes the file when it starts), and :func:`wandb_kwargs` gives the W&B logger the run id
stored in ``<run dir>/wandb_run_id.txt`` at the first start, so W&B resumes the same run.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from m3lit.config.checks import ConfigError
from m3lit.config.compose import finalize, write_text_atomic
from m3lit.files.errors import PathError

__all__ = [
    "RESUME_SAFE_KEYS",
    "ResumeRequest",
    "describe_schedule_change",
    "keep_csv_rows",
    "parse_resume_args",
    "resume_config",
    "wandb_kwargs",
]

log = logging.getLogger("m3lit.config.resume")

#: Keys (or key prefixes, ending in ``.``) a resume may change: logging, progress display, evaluation,
#: checkpoint frequency and devices. None of them changes the trained function: the same checkpoint, data
#: order and optimizer give the same weights (a different device count changes the per-rank batch split,
#: which m3lit's sampler keeps to the same global batches). Everything else needs
#: ``resume.allow_schedule_change=true``.
RESUME_SAFE_KEYS: tuple[str, ...] = (
    "ckpt_path",
    "print_config",
    "export",
    "evaluate.",
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.profiler",
    "callbacks.progress_bar",
    "callbacks.retrieval_metrics.",
    "callbacks.model_checkpoint.every_n_train_steps",
    "callbacks.model_checkpoint.save_top_k",
)

#: File in the run folder holding the W&B run id (written at the first start).
WANDB_ID_FILE = "wandb_run_id.txt"


class ResumeRequest:
    """What the command line asks: the run folder, the checkpoint, the other overrides, the schedule flag."""

    def __init__(self, run_dir: Path, ckpt: Path, overrides: list[str], allow_schedule_change: bool) -> None:
        self.run_dir, self.ckpt, self.overrides = run_dir, ckpt, overrides
        self.allow_schedule_change = allow_schedule_change


def parse_resume_args(argv: Sequence[str]) -> ResumeRequest | None:
    """``resume=<run dir>`` or ``ckpt_path=<run dir>/checkpoints/*.ckpt`` -> a request; None for a new run.

    Raises:
        PathError: the run folder has no config.yaml or checkpoint (exit status 1: a missing input).
        ConfigError: ``hydra.run.dir`` names another folder.
    """
    values = {a.partition("=")[0]: a.partition("=")[2] for a in argv if "=" in a}
    allow = values.get("resume.allow_schedule_change", "false").strip().lower() in ("true", "1", "yes")
    if values.get("resume"):
        run_dir = Path(values["resume"]).resolve()
        ckpt = (
            Path(values["ckpt_path"]).resolve()
            if values.get("ckpt_path")
            else run_dir / "checkpoints/last.ckpt"
        )
    elif (
        values.get("ckpt_path")
        and (Path(values["ckpt_path"]).resolve().parent.parent / "config.yaml").is_file()
    ):
        ckpt = Path(values["ckpt_path"]).resolve()
        run_dir = ckpt.parent.parent
    else:
        if "resume.allow_schedule_change" in values:
            raise ConfigError("resume.allow_schedule_change: only valid together with resume=<run dir>")
        return None
    if not (run_dir / "config.yaml").is_file():
        raise PathError("resume", run_dir, "no config.yaml there (not a m3lit run folder)")
    if not ckpt.is_file():
        raise PathError("resume", run_dir, f"no checkpoint {ckpt} (nothing to resume from)")
    target = values.get("hydra.run.dir")
    if target and Path(target).resolve() != run_dir:
        raise ConfigError(
            f"hydra.run.dir={target}: a resume continues in its own run folder {run_dir}. To start a NEW run "
            f"from these weights, use model.net.name_or_path={ckpt} instead of ckpt_path/resume."
        )
    skip = ("resume", "resume.allow_schedule_change", "hydra.run.dir", "ckpt_path")
    overrides = [a for a in argv if a.partition("=")[0] not in skip]
    overrides.append(f"ckpt_path={ckpt}")
    return ResumeRequest(run_dir, ckpt, overrides, allow)


def resume_config(request: ResumeRequest) -> DictConfig:
    """The run's saved config with the request's overrides, validated (refusals: see the module docstring).

    Raises:
        ConfigError: a group choice that differs from the run's (``trainer=gpu``), a malformed override, an
            unsafe change without ``resume.allow_schedule_change=true``, or an invalid result.
    """
    saved = OmegaConf.load(request.run_dir / "config.yaml")
    new = saved.copy()
    moved = str(saved.paths.output_dir) != str(request.run_dir)
    if moved:  # the folder was moved or copied: its own paths follow it
        _replace_prefix(new, str(saved.paths.output_dir), str(request.run_dir))
    choices = _saved_choices(request.run_dir)
    for item in request.overrides:
        _apply_override(new, item, choices)
    changes = [c for c in _changes(saved, new) if not (moved and c[0] == "paths.output_dir")]
    unsafe = [c for c in changes if not _is_safe(c[0])]
    if unsafe and not request.allow_schedule_change:
        raise ConfigError(_refusal(request, unsafe))
    for key, old, value in unsafe:
        log.warning("resume: %s changed from %r to %r (resume.allow_schedule_change=true)", key, old, value)
    if unsafe:
        log.warning("%s", describe_schedule_change(saved, new, request.ckpt))
    with open_dict(new):
        new.ckpt_path = str(request.ckpt)
    return finalize(new)


def describe_schedule_change(saved: DictConfig, new: DictConfig, ckpt: Path) -> str:
    """What ``resume.allow_schedule_change=true`` does to the learning rate, in numbers.

    The optimizer state (AdamW moments) and the scheduler's step counter come from the checkpoint; the
    schedule itself is a formula of (step, warm-up, total), rebuilt from the NEW config: total = the new
    ``model.scheduler.total_steps`` or ``trainer.max_steps``, warm-up = ``warmup_steps`` or
    ``ceil(warmup_ratio * total)``. The first resumed step (k + 1) runs at the learning rate saved in the
    checkpoint; from step k + 2 on the rate is ``lr * new_schedule(step)``, so it jumps from the old curve
    to the new one (e.g. a longer run restarts its linear decay from a higher value).
    """
    from m3lit.model.training_checkpoint import safe_torch_load
    from m3lit.training.optim import lr_lambda, warmup_steps_for

    step = int(safe_torch_load(ckpt).get("global_step", 0))

    def factor(cfg: DictConfig) -> float:
        sched = cfg.model.scheduler
        total = int(sched.total_steps or cfg.trainer.max_steps)
        warmup = warmup_steps_for(total, sched.warmup_steps, sched.warmup_ratio)
        return lr_lambda(str(sched.name), warmup, total)(step + 1)

    old, now = factor(saved), factor(new)
    return (
        f"resume.allow_schedule_change: optimizer and scheduler state restored at step {step}; the schedule is "
        f"rebuilt from the new config: step {step + 1} keeps the saved lr, then lr follows the new curve "
        f"(multiplier at step {step + 2}: {old:.4g} on the saved schedule -> {now:.4g} on the new one)"
    )


def keep_csv_rows(loggers: Sequence[Any], resumed_step: int) -> None:
    """Keep ``metrics.csv``'s rows up to ``resumed_step`` for every CSV logger of a resumed run.

    Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts; this reads the rows first,
    lets the writer start, and writes them back (rows of steps after the checkpoint are dropped: those
    steps run again). The writer then appends, widening the header if new metrics appear. Lightning's warning
    that previous log files "will be deleted" is silenced here: the kept rows are written back at once.
    """
    from lightning.pytorch.loggers import CSVLogger

    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        path = Path(logger.log_dir) / "metrics.csv"
        if not path.is_file():
            continue
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            fields, rows = list(reader.fieldnames or []), list(reader)
        rows = [r for r in rows if not r.get("step") or int(float(r["step"])) <= resumed_step]
        with warnings.catch_warnings():  # "Previous log files ... will be deleted": the rows are written back
            warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
            writer = logger.experiment  # deletes metrics.csv
        with open(path, "w", newline="", encoding="utf-8") as handle:
            out = csv.DictWriter(handle, fieldnames=fields)
            out.writeheader()
            out.writerows(rows)
        writer.metrics_keys = sorted(fields)
        log.info(
            "resume: kept %d rows of %s (steps <= %d); the rows of later steps are dropped, as those steps run again",
            len(rows),
            path,
            resumed_step,
        )


def wandb_kwargs(node: Mapping, out_dir: Path) -> dict[str, Any]:
    """``id``/``resume`` for a W&B logger node: the id stored in the run folder (created at the first start)."""
    if "WandbLogger" not in str(node.get("_target_", "")) or node.get("id"):
        return {}
    path = Path(out_dir) / WANDB_ID_FILE
    if path.is_file():
        return {"id": path.read_text(encoding="utf-8").strip(), "resume": "allow"}
    # derived from the folder, so every DDP rank (each runs this) picks the same id without talking
    run_id = hashlib.sha256(str(Path(out_dir).resolve()).encode()).hexdigest()[:12]
    write_text_atomic(path, run_id + "\n")
    return {"id": run_id, "resume": "allow"}


# ---------------------------------------------------------------------------------------------- overrides
#: Keys (or prefixes, ending in ``.``) whose change ``resume.allow_schedule_change=true`` is meant for.
SCHEDULE_KEYS = ("trainer.max_steps", "trainer.max_epochs", "model.scheduler.", "model.optimizer.")


def _saved_choices(run_dir: Path) -> dict[str, Any] | None:
    """The run's config-group choices (``experiment: demo``, ``trainer: cpu``, ...) from the
    ``.hydra/hydra.yaml`` its first start wrote; None when there is none (a run composed in Python)."""
    path = run_dir / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return None
    choices = OmegaConf.select(OmegaConf.load(path), "hydra.runtime.choices", default=None)
    return dict(OmegaConf.to_container(choices)) if choices is not None else None


def _apply_override(new: DictConfig, item: str, choices: dict[str, Any] | None) -> None:
    """Apply one command-line override of a resume to ``new``: a group choice must equal the saved one,
    ``~key`` removes, ``key=value`` / ``+key=value`` sets an existing (or a safe) key."""
    key, sep, value = item.partition("=")
    name = key.lstrip("~+")
    if name in (choices or {}) or name in _GROUPS:  # a config group: it must be the run's own choice
        saved = (choices or {}).get(name, _ABSENT)
        same = (saved is None or saved is _ABSENT) if key.startswith("~") else str(saved) == value
        if choices is not None and same:
            return
        was = (
            "no .hydra/hydra.yaml records it"
            if choices is None
            else f"the run was composed with {name}={saved}"
        )
        raise ConfigError(
            f"resume: {item}: a resume keeps the run's config.yaml and cannot change a config group ({was}); "
            "set single keys instead, e.g. trainer.accelerator=gpu"
        )
    if key.startswith("~"):
        if OmegaConf.select(new, name, default=None) is not None:
            parent, _, leaf = name.rpartition(".")
            node = OmegaConf.select(new, parent) if parent else new
            with open_dict(node):
                node.pop(leaf)
        return
    if not sep:
        raise ConfigError(f"resume: {item!r}: not key=value")
    if OmegaConf.select(new, name, default=_ABSENT) is _ABSENT and not _is_safe(name):
        raise ConfigError(f"resume: {item!r}: the run's config.yaml has no key {name!r}")
    try:
        with open_dict(new):
            parsed = OverridesParser.create().parse_override(f"{name}={value}").value()  # Hydra's grammar
            OmegaConf.update(new, name, parsed, merge=False)
    except Exception as error:
        raise ConfigError(f"resume: {item!r}: {error}") from error


def _refusal(request: ResumeRequest, unsafe: list[tuple[str, Any, Any]]) -> str:
    """One sentence per refused change, each with the hint that fits its key."""
    sentences = [f"resume of {request.run_dir} refused: {len(unsafe)} override(s) change what is trained."]
    for key, old, value in unsafe:
        if _matches(key, SCHEDULE_KEYS):
            hint = "pass resume.allow_schedule_change=true to rebuild the LR schedule from the resumed step"
        else:
            hint = (
                f"not a schedule setting: resume with the saved value, or start a new run from these weights "
                f"with model.net.name_or_path={request.ckpt}"
            )
        sentences.append(f"{key}: saved {old!r}, now {value!r} ({hint}).")
    return " ".join(sentences)


# ---------------------------------------------------------------------------------------------- helpers
_ABSENT = object()
_GROUPS = ("model", "data", "loss", "callbacks", "logger", "trainer", "paths", "experiment", "debug")


def _is_safe(key: str) -> bool:
    return _matches(key, RESUME_SAFE_KEYS)


def _matches(key: str, keys: Sequence[str]) -> bool:
    """``key`` is one of ``keys``, below one of them, or starts with one that ends in ``.``."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) or key.startswith(k + ".") for k in keys)


def _changes(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(key, old, new) for every leaf that differs (a mapping vs a leaf counts as one change)."""
    if isinstance(old, DictConfig) and isinstance(new, DictConfig):
        out = []
        for key in sorted(set(old.keys()) | set(new.keys()), key=str):
            sub = f"{prefix}{key}"
            if key not in new or key not in old:
                out.append((sub, _plain(old.get(key)), _plain(new.get(key))))
            else:
                out += _changes(old[key], new[key], sub + ".")
        return out
    a, b = _plain(old), _plain(new)
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, DictConfig | ListConfig) else value


def _replace_prefix(cfg: DictConfig, old: str, new: str) -> None:
    for key, value in list(cfg.items()):
        if isinstance(value, DictConfig):
            _replace_prefix(value, old, new)
        elif isinstance(value, str) and (value == old or value.startswith(old + "/")):
            cfg[key] = new + value[len(old) :]
