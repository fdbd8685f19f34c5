"""Strict start-up validation of a composed training config (used by :mod:`m3lit.config.compose`).

A typo or a wrong type stops the run with a message naming the key, before anything is built:

* the top-level keys, ``paths`` and ``evaluate`` follow the dataclass schemas below;
* every node with a ``_target_`` is checked against the signature of what it instantiates: unknown
  keywords, and values whose type contradicts the annotation (``trainer.max_steps=abc``), are errors;
* ``loss`` is checked against :func:`m3lit.losses.m3_loss`, ``callbacks.stage_switch.schedule`` against
  :func:`m3lit.training.stages.parse_schedule`, and every data source the schedule switches to must be a
  known source and set (unless a ``corpus`` fills the data paths at start-up: :mod:`m3lit.config.corpus`);
* values that need no data: ``trainer.max_steps``, the ``data`` options
  (:meth:`m3lit.data.options.DataOptions.check`: thresholds, the batch tables of the sources the run reads)
  and ``model.net.lora`` (:func:`m3lit.training.build.check_lora`);
* a misspelt key or choice names the closest valid ones (:func:`m3lit.files.errors.did_you_mean`).
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import importlib
import inspect
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from m3lit.files.errors import UsageError, did_you_mean

__all__ = [
    "ConfigError", "validate", "check_target", "check_batch_size_overrides", "import_object",
    "target_options",
]  # fmt: skip


class ConfigError(UsageError):
    """A configuration problem found at start-up; the message names the key (a ``ValueError``; exit status 2)."""


# ---------------------------------------------------------------------------------------------- schemas
@dataclasses.dataclass
class PathsSchema:
    root_dir: str = "."  # repository root (relative paths below are resolved against the cwd)
    data_dir: str = "data"  # where user datasets live
    log_dir: str = "logs"  # parent of every run folder
    output_dir: str = "."  # this run's folder (hydra.run.dir)


@dataclasses.dataclass
class EvaluateSchema:
    enabled: bool = True  # evaluate the final model on a held-out BEIR split after training
    baseline: bool = True  # also evaluate the model before training (step 0) into <run>/baseline/
    dataset_dir: str | None = None  # BEIR folder (corpus.jsonl, queries.jsonl, qrels/); a corpus may fill it
    split: str = "test"  # qrels split
    modes: list[str] = dataclasses.field(default_factory=list)  # retrieval modes
    ignore_identical_ids: bool = True  # BEIR: drop a retrieved document whose id equals the query's id
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra evaluate_retrieval keywords
    suite: str | None = (
        None  # benchmark suite folder (suite.json): paper-shaped tables instead of dataset_dir
    )
    reference: dict[str, Any] | None = (
        None  # suite: a released model evaluated dense-only beside the trained one
    )
    tune_fusion: bool = False  # suite: Dense+Sparse / All weights chosen on each task's dev queries


@dataclasses.dataclass
class RootSchema:
    task_name: str = "train"  # names the run folder logs/<task_name>/runs/<time>
    tags: list[str] = dataclasses.field(default_factory=list)  # W&B tags
    seed: int = 42  # global seed
    ckpt_path: str | None = None  # resume from this Lightning checkpoint
    train: bool = True  # run trainer.fit
    export: bool = True  # write <run>/export at the end
    print_config: bool = True  # print the resolved config at start-up
    evaluate: EvaluateSchema = dataclasses.field(default_factory=EvaluateSchema)
    # a corpus: {prepare: <hook's dotted path>, its own options (checked by the hook)} (m3lit.config.corpus)
    corpus: dict[str, Any] | None = None
    paths: PathsSchema = dataclasses.field(default_factory=PathsSchema)


#: Top-level config groups that hold ``_target_`` nodes (validated against signatures instead).
GROUP_KEYS = ("model", "data", "loss", "callbacks", "logger", "trainer")
#: ``m3_loss`` arguments the training module supplies itself (they may not appear in ``loss``).
LOSS_SET_BY_MODULE = {
    "dense", "sparse", "colbert", "group_size", "self_distill", "teacher_scores", "query_offset", "in_batch_negatives",
}  # fmt: skip
_HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


# ---------------------------------------------------------------------------------------------- validate
def validate(cfg: DictConfig | Mapping) -> None:
    """Raise :class:`ConfigError` for unknown keys, wrong types and invalid schedules (module docstring)."""
    if isinstance(cfg, DictConfig):
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(
                f"config error: required value(s) not set: {', '.join(missing)} (e.g. {missing[0]}=PATH)"
            )
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    root = {k: v for k, v in data.items() if k not in GROUP_KEYS and k != "debug"}
    try:
        OmegaConf.merge(OmegaConf.structured(RootSchema), root)
    except Exception as error:
        raise ConfigError(
            f"config error: {_first_line(error)} (full key: {getattr(error, 'full_key', '?')})"
        ) from error
    for group in ("model", "data", "trainer"):
        if data.get(group) is not None:
            check_target(data[group], group)
    for group in ("callbacks", "logger"):
        for name, node in (data.get(group) or {}).items():
            if node is not None:
                check_target(node, f"{group}.{name}")
    _check_loss(data.get("loss") or {})
    stage = (data.get("model") or {}).get("stage")
    if stage is not None:
        from m3lit.training.stages import stage_spec

        try:
            stage_spec(stage)
        except ValueError as error:
            raise ConfigError(f"model.stage: {error}") from error
    schedule, entries = ((data.get("callbacks") or {}).get("stage_switch") or {}).get("schedule"), []
    if schedule is not None:
        from m3lit.training.stages import parse_schedule

        try:
            entries = parse_schedule(schedule)
        except ValueError as error:
            raise ConfigError(f"callbacks.stage_switch.schedule: {error}") from error
        # a corpus fills data.* at start-up (m3lit.config.corpus): then only the names are checked
        _check_sources(entries, data.get("data") or {}, paths=not data.get("corpus"))
    _check_values(data, [e.source for e in entries])


def _check_values(data: Mapping, scheduled: list[str | None]) -> None:
    """Values that are wrong whatever the data: steps, the data options, LoRA (before any run folder)."""
    trainer = data.get("trainer") or {}
    steps = trainer.get("max_steps")
    if data.get("train", True) and isinstance(steps, int) and (steps == 0 or steps < -1):
        raise ConfigError(
            f"trainer.max_steps must be a positive number of optimizer steps (or -1 with trainer.max_epochs), "
            f"got {steps}"
        )
    node = data.get("data") or {}
    options_type = (
        getattr(import_object(node["_target_"]), "options_type", None) if "_target_" in node else None
    )
    if options_type is not None and hasattr(options_type, "check"):
        names = {f.name for f in dataclasses.fields(options_type)}
        try:
            options_type(**{k: v for k, v in node.items() if k in names}).check(scheduled)
        except ValueError as error:
            raise ConfigError(str(error)) from error
    net = (data.get("model") or {}).get("net") or {}
    if isinstance(net, Mapping) and net.get("lora") is not None:
        from m3lit.training.build import check_lora

        try:
            check_lora(net)
        except ValueError as error:
            raise ConfigError(str(error)) from error


#: Per-bucket batch settings that the scalar ``data.batch_size`` replaces (giving both is ambiguous).
BATCH_TABLE_KEYS = ("data.bucket_batch_sizes", "data.pairs_bucket_batch_sizes", "data.max_tokens_per_batch")


def check_batch_size_overrides(overrides) -> None:
    """``data.batch_size=N`` together with a per-bucket table or token budget on the command line is an error.

    >>> check_batch_size_overrides(["data.batch_size=4", "data.bucket_batch_sizes=[4,4]"])
    Traceback (most recent call last):
    ...
    m3lit.config.checks.ConfigError: data.batch_size=4 and data.bucket_batch_sizes=[4,4] both set the batch size: keep one (data.batch_size applies to every bucket)
    """
    given = {}
    for item in overrides:
        key, sep, value = item.lstrip("+").partition("=")
        if sep and value.strip().lower() not in ("null", "none", "~", ""):
            given[key] = item.lstrip("+")
    if "data.batch_size" in given:
        for key in BATCH_TABLE_KEYS:
            if key in given:
                raise ConfigError(
                    f"{given['data.batch_size']} and {given[key]} both set the batch size: keep one "
                    "(data.batch_size applies to every bucket)"
                )


def _check_sources(entries, data: Mapping, paths: bool = True) -> None:
    """Every data source the stage schedule switches to must exist and (``paths``) be configured (fail now,
    not at that step)."""
    from m3lit.data.streams import SOURCE_KEYS

    for entry in entries:
        if entry.source is not None and entry.source not in SOURCE_KEYS:
            raise ConfigError(
                f"callbacks.stage_switch.schedule: step {entry.step}: unknown data source {entry.source!r}"
                f"{did_you_mean(entry.source, SOURCE_KEYS)}; choose one of {sorted(SOURCE_KEYS)}"
            )
        key = SOURCE_KEYS.get(entry.source or "")
        if paths and key and data.get(key) in (None, "", []):
            raise ConfigError(
                f"callbacks.stage_switch.schedule switches to data source {entry.source!r} at step {entry.step}, "
                f"but data.{key} is not set (e.g. data.{key}=PATH)"
            )


def check_target(node: Any, where: str) -> None:
    """Check a ``_target_`` node's keys and value types against the target's signature (recursively)."""
    if not isinstance(node, Mapping):
        raise ConfigError(f"{where}: expected a mapping with _target_, got {node!r}")
    if "_target_" not in node:
        raise ConfigError(f"{where}: missing _target_")
    try:
        target = import_object(node["_target_"])
    except Exception as error:
        raise ConfigError(f"{where}._target_: cannot import {node['_target_']!r}: {error}") from error
    params, hints, open_kwargs = _signature(target)
    for key, value in node.items():
        if key in _HYDRA_KEYS:
            continue
        path = f"{where}.{key}"
        if key not in params:
            if open_kwargs:
                continue
            raise ConfigError(
                f"{path}: unknown option for {node['_target_']}{did_you_mean(key, params)}; "
                f"valid options: {sorted(params)}"
            )
        if isinstance(value, Mapping) and "_target_" in value:
            check_target(value, path)
            continue
        if key in hints and not _matches(value, hints[key], path):
            raise ConfigError(_mismatch(path, value, hints[key]))
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in node]
    if missing and not node.get("_partial_", False):
        raise ConfigError(f"{where}: missing required option(s) {missing} for {node['_target_']}")


def target_options(node: Mapping) -> list[str]:
    """The options a ``_target_`` node accepts (its target's parameters); ``[]`` when it cannot be imported."""
    try:
        return sorted(_signature(import_object(node["_target_"]))[0])
    except Exception:  # reported by check_target when the config is validated
        return []


def _check_loss(loss: Mapping) -> None:
    from m3lit.losses import M3LossWeights, m3_loss

    params, hints, _ = _signature(m3_loss)
    for key, value in loss.items():
        if key in LOSS_SET_BY_MODULE or key not in params:
            allowed = sorted(set(params) - LOSS_SET_BY_MODULE)
            raise ConfigError(
                f"loss.{key}: unknown loss option (the stage sets {key!r} itself)"
                if key in LOSS_SET_BY_MODULE
                else f"loss.{key}: unknown loss option; valid options: {allowed}"
            )
        if key == "weights":
            try:
                M3LossWeights.coerce(value)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"loss.weights: {error}") from error
        elif key in hints and not _matches(value, hints[key], f"loss.{key}"):
            raise ConfigError(_mismatch(f"loss.{key}", value, hints[key]))


def _signature(target: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """(named parameters, type hints, takes ``**kwargs``) of a ``_target_``.

    A factory that takes ``**keys`` for an options dataclass names it as ``options_type``
    (``M3DataModule.from_config``, ``net_from_config``): its fields are the accepted keys, so a typo is
    still an unknown option.
    """
    fn = target.__init__ if inspect.isclass(target) else target
    sig = inspect.signature(fn)
    params = {
        n: p
        for n, p in sig.parameters.items()
        if n != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    options_type = getattr(target, "options_type", None)
    try:
        hints = typing.get_type_hints(fn)
        if dataclasses.is_dataclass(options_type):
            hints.update(typing.get_type_hints(options_type))
    except Exception:  # unresolvable forward references: check names only
        hints = {}
    if dataclasses.is_dataclass(options_type):
        keyword = inspect.Parameter.KEYWORD_ONLY
        for field in dataclasses.fields(options_type):
            params.setdefault(field.name, inspect.Parameter(field.name, keyword, default=None))
        open_kwargs = False
    return params, hints, open_kwargs


def _matches(value: Any, tp: Any, where: str) -> bool:
    """Is ``value`` (plain YAML data) acceptable for annotation ``tp``? Unknown constructs pass."""
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        dataclass_args = [a for a in args if dataclasses.is_dataclass(a)]
        if dataclass_args and isinstance(value, Mapping):
            _check_dataclass(value, dataclass_args[0], where)
            return True
        return any(_matches(value, a, where) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is type(None):
        return value is None
    if value is not None and isinstance(value, Mapping) and "_target_" in value:
        return True  # an object built by instantiate
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp in (Path, os.PathLike) or origin is os.PathLike:
        return isinstance(value, str)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            return False
        _check_dataclass(value, tp, where)
        return True
    container = origin or tp
    if container in (list, tuple, set, cabc.Sequence, cabc.Iterable, cabc.Collection, cabc.MutableSequence):
        if not isinstance(value, list | tuple):
            return False
        if args and container is not tuple:
            return all(_matches(v, args[0], where) for v in value)
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(
                _matches(v, a, where) for v, a in zip(value, args, strict=True)
            )
        return True
    if container in (dict, cabc.Mapping, cabc.MutableMapping):
        return isinstance(value, Mapping)
    if inspect.isclass(tp):
        return isinstance(value, tp)
    return True


def _check_dataclass(value: Mapping, cls: type, where: str) -> None:
    known = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, item in value.items():
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown option; valid options: {sorted(known)}")
        if not _matches(item, hints[key], f"{where}.{key}"):
            raise ConfigError(_mismatch(f"{where}.{key}", item, hints[key]))


def _mismatch(path: str, value: Any, tp: Any) -> str:
    """The message for a value that does not fit its annotation; a choice (Literal) lists the choices."""
    choices = [a for a in typing.get_args(tp) if typing.get_origin(a) is typing.Literal]
    if typing.get_origin(tp) is typing.Literal:
        choices = [tp]
    if choices and isinstance(value, str):
        allowed = [c for lit in choices for c in typing.get_args(lit)]
        optional = " or null" if type(None) in typing.get_args(tp) else ""
        return (
            f"{path}={value}: not a valid choice{did_you_mean(value, allowed)}; choose one of "
            f"{', '.join(repr(c) for c in allowed)}{optional}"
        )
    return f"{path}: value {value!r} does not match the expected type {_type_name(tp)}"


def _type_name(tp: Any) -> str:
    """``int``, ``one of 'a', 'b'`` (a Literal), ``int | None``, ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def import_object(path: str) -> Any:
    """``package.module.attr`` (possibly nested attributes) -> the object, like Hydra's ``_target_``."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    return importlib.import_module(path)
