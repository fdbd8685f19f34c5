"""What a source's config value names: one :class:`DataEntry` per dataset, before anything is read.

``data.train_data`` / ``data.pairs_data`` is one of these, or a list of them (spec §4.3; docs/data.md):

* a JSONL file (one dataset), or a parquet (``.parquet``) or Arrow (``.arrow``, as ``datasets`` writes it)
  file;
* a folder: a ``datasets`` ``save_to_disk`` folder (it holds ``state.json`` or ``dataset_dict.json``) is one
  dataset (of a ``DatasetDict``, the split ``train`` unless ``split`` is given); any other folder holds one
  dataset per ``.jsonl``/``.json``/``.parquet``/``.arrow`` file, in name order, not recursive;
* ``hf:ID[@REVISION][:CONFIG[:SPLIT]]``: a dataset of the Hugging Face Hub (or a local folder in the Hub's
  layout), its config (empty: the default one) and split (default ``train``), e.g. ``hf:org/set:en:train``
  or ``hf:org/set::train``;
* a mapping ``{path: P, no_in_batch_neg: bool, columns: {...}, split: S, config: C, revision: R}`` with
  ``P`` any of the above (``split`` for ``hf:`` and ``save_to_disk`` folders, ``config`` and ``revision``
  for ``hf:`` only).

A folder (or file stem) whose name ends in ``no_in_batch_neg`` marks its datasets no-in-batch-negatives.
``columns`` (:mod:`m3lit.data.columns`) maps other column names onto the schema; an entry's own mapping
replaces ``data.columns``. Every form but JSONL is read with the ``datasets`` package (:mod:`m3lit.data.tables`),
which is optional: naming such a source without it installed is one error naming the ``hf`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from m3lit.data.columns import ColumnMap
from m3lit.files.errors import UsageError
from m3lit.files.jsonl import DataError

__all__ = ["HUB_PREFIX", "DataEntry", "expand_train_data"]

NO_IN_BATCH_SUFFIX = "no_in_batch_neg"
#: Suffix of a file -> how it is read (any other suffix of a file named directly: JSONL).
FILE_KINDS = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".arrow": "arrow"}
#: The prefix of a Hub dataset id.
HUB_PREFIX = "hf:"
#: Files that mark a ``datasets`` ``save_to_disk`` folder.
DISK_MARKERS = ("dataset_dict.json", "state.json")
ENTRY_KEYS = ("path", "no_in_batch_neg", "columns", "split", "config", "revision")


@dataclass(frozen=True)
class DataEntry:
    """One dataset a source names (module docstring); nothing is read yet.

    Attributes:
        kind: ``"jsonl"``, ``"parquet"``, ``"arrow"``, ``"disk"`` (a save_to_disk folder) or ``"hub"``.
        path: the file or folder; for ``"hub"`` the id (or local folder) followed by ``CONFIG:SPLIT``, so
            that the sets of one Hub repository share a parent (:mod:`m3lit.data.merge` groups by parent).
        name: the name in logs, errors and ``M3Batch.dataset`` (``folder/file.jsonl``, ``hf:org/set::train``).
        no_in_batch_neg: the no-in-batch-negatives flag.
        columns: the column mapping, or None.
        repo / config / split / revision: the ``datasets`` location (``repo`` for ``"hub"`` only).
    """

    kind: str
    path: Path
    name: str
    no_in_batch_neg: bool = False
    columns: ColumnMap | None = None
    repo: str | None = None
    config: str | None = None
    split: str | None = None
    revision: str | None = None


def expand_train_data(
    train_data: str | Path | dict | Sequence, key: str = "data.train_data", columns: Any = None
) -> list[DataEntry]:
    """Expand ``train_data`` (the value of config key ``key``) into its datasets, in order. Only the file
    system is looked at (a Hub id is not), so it doubles as the start-up check of the paths.

    Args:
        train_data: the config value (module docstring).
        key: its config key, for messages.
        columns: ``data.columns``, the mapping of every entry without its own.

    Raises:
        DataError: a path that does not exist, a folder without data files, a malformed entry.
        UsageError: a bad column mapping, or a source that needs ``datasets`` when it is not installed.
    """
    if train_data is None:
        raise DataError(f"{key} is not set: give a JSONL file, a folder of them, or a list")
    entries = [train_data] if isinstance(train_data, str | Path | Mapping) else list(train_data)
    if not entries:
        raise DataError(f"{key} is an empty list")
    default_columns = ColumnMap.parse(columns, "data.columns")
    out: list[DataEntry] = []
    for entry in entries:
        options: dict[str, Any] = {}
        if isinstance(entry, Mapping):
            unknown = set(entry) - set(ENTRY_KEYS)
            if "path" not in entry or unknown:
                raise DataError(
                    f"{key} entry {dict(entry)!r}: expected keys 'path' and optional "
                    f"{', '.join(repr(k) for k in ENTRY_KEYS[1:])}"
                )
            options, entry = dict(entry), entry["path"]
        mapping = (
            ColumnMap.parse(options["columns"], f"{key}.columns") if "columns" in options else default_columns
        )
        found = _expand_one(str(entry), options, key)
        out += [replace(e, columns=mapping) for e in found]
    if any(e.kind != "jsonl" for e in out):
        require_datasets(key, next(e.name for e in out if e.kind != "jsonl"))
    return out


def require_datasets(key: str, name: str) -> None:
    """Raise a one-line :class:`UsageError` naming the ``hf`` extra when ``datasets`` is not installed."""
    if find_spec("datasets") is None:
        raise UsageError(
            f"{key}: {name} is read with the `datasets` package, which is not installed: "
            "pip install 'm3lit[hf]' (or pip install 'datasets>=4')"
        )


def _expand_one(entry: str, options: dict[str, Any], key: str) -> list[DataEntry]:
    """The datasets of one entry (a path or ``hf:`` id) with its mapping's ``options``."""
    flag = bool(options.get("no_in_batch_neg", False))
    if entry.startswith(HUB_PREFIX):
        return [_hub_entry(entry, options, flag, key)]
    path = Path(entry).expanduser()
    extra = [k for k in ("config", "revision") if options.get(k) is not None]
    if options.get("split") is not None and not _is_disk(path):
        extra.append("split")
    if extra:
        raise DataError(
            f"{key} entry {entry}: {', '.join(extra)} applies only to hf: ids and save_to_disk folders"
        )
    if _is_disk(path):
        return [_disk_entry(path, options.get("split"), flag or path.name.endswith(NO_IN_BATCH_SUFFIX))]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in FILE_KINDS)
        if not files:
            raise DataError("folder has no .jsonl/.json/.parquet/.arrow files", path=path)
        folder_flag = flag or path.name.endswith(NO_IN_BATCH_SUFFIX)
        return [_file_entry(f, folder_flag) for f in files]
    if path.is_file():
        return [_file_entry(path, flag)]
    raise DataError(f"no such file or folder ({key})", path=path)


def _file_entry(path: Path, flag: bool) -> DataEntry:
    return DataEntry(
        kind=FILE_KINDS.get(path.suffix, "jsonl"),
        path=path,
        name=f"{path.parent.name}/{path.name}",
        no_in_batch_neg=flag or path.stem.endswith(NO_IN_BATCH_SUFFIX),
    )


def _is_disk(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in DISK_MARKERS)


def _disk_entry(path: Path, split: str | None, flag: bool) -> DataEntry:
    """A save_to_disk folder: a Dataset, or a DatasetDict of which ``split`` (default ``train``) is read."""
    name = f"{path.parent.name}/{path.name}"
    if (path / "dataset_dict.json").is_file():
        split = split or "train"
        return DataEntry("disk", path / split, f"{name}:{split}", flag, split=split)
    return DataEntry("disk", path, name, flag)


def _hub_entry(entry: str, options: dict[str, Any], flag: bool, key: str) -> DataEntry:
    """``hf:ID[@REVISION][:CONFIG[:SPLIT]]``, completed by the mapping's ``config``/``split``/``revision``."""
    repo, *rest = entry[len(HUB_PREFIX) :].split(":")
    repo, _, revision = repo.partition("@")
    if not repo or len(rest) > 2:
        raise DataError(
            f"{key}: {entry!r}: expected hf:ID[@REVISION][:CONFIG[:SPLIT]], e.g. hf:org/set:en:train"
        )
    parts = {
        "config": rest[0] if rest else "",
        "split": rest[1] if len(rest) > 1 else "",
        "revision": revision,
    }
    for name, value in parts.items():
        given = options.get(name)
        if value and given is not None and str(given) != value:
            raise DataError(f"{key}: {entry!r} and its {name}={given!r} disagree; give the {name} once")
        parts[name] = value or (str(given) if given is not None else "")
    config, split, revision = parts["config"] or None, parts["split"] or "train", parts["revision"] or None
    at = f"@{revision}" if revision else ""
    name = f"{HUB_PREFIX}{repo}{at}:{config or ''}:{split}"
    path = Path(f"{HUB_PREFIX}{repo}") / f"{config or ''}:{split}"
    return DataEntry("hub", path, name, flag, repo=repo, config=config, split=split, revision=revision)
