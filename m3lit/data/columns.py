"""Column mapping: rows whose columns have other names train as FlagEmbedding's fields (spec §4.1).

``data.columns`` (or the ``columns`` of one ``train_data`` entry) maps a field of the training schema to the
column it is read from. A list field (``pos``, ``neg``, ``pos_scores``, ``neg_scores``) may take a list of
columns, joined in order: a string column gives one item, a list column all its items. A column name may
be a glob pattern (``negative_*``), matched against the row's columns in their order, so
sentence-transformers' ``(anchor, positive, negative_1, ..., negative_n)`` layout trains unchanged. A field
that is not mapped is read from the column of its own name; other columns are ignored.

An error in a mapped field names the column it came from:

>>> columns = ColumnMap.parse({"query": "anchor", "pos": "positive", "neg": "negative_*"}, "data.columns")
>>> columns.fields({"anchor": "a", "positive": "p", "negative_1": "n1", "negative_2": "n2"})["neg"]
('n1', 'n2')
>>> columns.fields({"anchor": "a", "positive": "p", "negative_1": "n1", "negative_2": 3})
Traceback (most recent call last):
...
m3lit.files.jsonl.DataError: field 'neg[1]': column 'negative_2': must be a string, got int
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from m3lit.data.schema import example_fields
from m3lit.files.errors import UsageError
from m3lit.files.jsonl import DataError

__all__ = ["FIELDS", "LIST_FIELDS", "ColumnMap", "table_columns"]

#: Every field of the training schema (:class:`~m3lit.data.schema.Example` but ``line``).
FIELDS = (
    "query",
    "pos",
    "neg",
    "pos_scores",
    "neg_scores",
    "prompt",
    "type",
    "batch_size",
    "train_group_size",
)
#: The fields that hold a list, and so may join several columns.
LIST_FIELDS = ("pos", "neg", "pos_scores", "neg_scores")
#: Fields a table must provide (mapped or by name) for any row to be valid.
REQUIRED = ("query", "pos")


@dataclass(frozen=True)
class ColumnMap:
    """Which columns each mapped field is read from (module docstring).

    Attributes:
        mapping: ``((field, (column or pattern, ...)), ...)`` in the order given.
    """

    mapping: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def parse(cls, value: Any, key: str) -> ColumnMap | None:
        """The mapping of config value ``value`` (``{field: column or [columns]}``; None or {}: no mapping).

        Raises:
            UsageError: not a mapping, an unknown field, an empty or non-string column, or several columns
                (or a pattern) for a field that holds one value.
        """
        if value is None or (isinstance(value, Mapping) and not value):
            return None
        if not isinstance(value, Mapping):
            raise UsageError(
                f"{key} must be a mapping {{field: column}}, e.g. {{query: anchor, pos: positive}}"
            )
        mapping = []
        for field, columns in value.items():
            if field not in FIELDS:
                raise UsageError(f"{key}.{field}: unknown field; the fields are {', '.join(FIELDS)}")
            columns = [columns] if isinstance(columns, str) else columns
            if (
                not isinstance(columns, Sequence)
                or not columns
                or not all(isinstance(c, str) and c for c in columns)
            ):
                raise UsageError(f"{key}.{field}: expected a column name or a list of them, got {columns!r}")
            if field not in LIST_FIELDS and (len(columns) > 1 or _pattern(columns[0])):
                raise UsageError(
                    f"{key}.{field}: holds one value, so it takes one column name, got {columns!r}"
                )
            mapping.append((field, tuple(columns)))
        return cls(tuple(mapping))

    def key(self) -> str:
        """The mapping as a stable string (part of the token-length cache key)."""
        return json.dumps(self.mapping)

    def columns(self, available: Sequence[str], where: str) -> list[str]:
        """The columns of a table with columns ``available`` that rows are read from, in table order.

        Raises:
            DataError: a mapped column (or pattern) that the table lacks, or a required field with no column.
        """
        used = set()
        for field, names in self.mapping:
            for name in names:
                found = _expand(name, available)
                if not found:
                    raise DataError(
                        f"no column {name!r} (the columns are {', '.join(available)})",
                        path=where,
                        field=field,
                    )
                used.update(found)
        mapped = {field for field, _ in self.mapping}
        by_name = {c for c in available if c in FIELDS and c not in mapped}
        _require(mapped | by_name, available, where)
        return [c for c in available if c in used | by_name]

    def fields(self, record: dict[str, Any]) -> dict[str, Any]:
        """:func:`~m3lit.data.schema.example_fields` of ``record`` read through the mapping.

        Raises:
            DataError: as ``example_fields``, its field naming the column the bad value came from.
        """
        out = dict(record)
        origins: dict[str, list[str]] = {}
        for field, names in self.mapping:
            out.pop(field, None)
            columns = [c for name in names for c in _expand(name, list(record))]
            if field not in LIST_FIELDS:
                if columns and record[columns[0]] is not None:
                    out[field] = record[columns[0]]
                origins[field] = [f"column '{c}'" for c in columns] or [f"column '{names[0]}'"]
                continue
            items, origin = _join(record, columns)
            if items is not None:
                out[field] = items
            origins[field] = origin or [f"column '{c}'" for c in (columns or names)]
        try:
            return example_fields(out)
        except DataError as error:
            origin = _origin(error.field, origins)
            problem = f"{origin}: {error.problem}" if origin else error.problem
            raise DataError(problem, field=error.field) from None


def table_columns(columns: ColumnMap | None, available: Sequence[str], where: str) -> list[str]:
    """The columns of a table (columns ``available``, called ``where`` in messages) that rows are read from.

    Without a mapping: the columns named like a field. Raises :class:`DataError` as :meth:`ColumnMap.columns`.
    """
    if columns is not None:
        return columns.columns(available, where)
    present = [c for c in available if c in FIELDS]
    _require(set(present), available, where)
    return present


def _require(present: set[str], available: Sequence[str], where: str) -> None:
    """Raise a :class:`DataError` when a required field is neither mapped nor a column."""
    for field in REQUIRED:
        if field not in present:
            raise DataError(
                f"no column (the columns are {', '.join(available)}; map them with data.columns, "
                "e.g. {query: anchor, pos: positive})",
                path=where,
                field=field,
            )


def _pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def _expand(name: str, available: Sequence[str]) -> list[str]:
    """The columns ``name`` denotes: itself when present, or the matches of a pattern in table order."""
    if _pattern(name):
        return [c for c in available if fnmatchcase(c, name)]
    return [name] if name in available else []


def _join(record: dict[str, Any], columns: list[str]) -> tuple[list | None, list[str]]:
    """The items of ``columns`` joined (a list column adds its items), and where each item came from."""
    items, origin = [], []
    present = False
    for column in columns:
        value = record[column]
        if value is None:
            continue
        present = True
        if isinstance(value, list):
            items.extend(value)
            origin.extend(f"column '{column}'[{j}]" for j in range(len(value)))
        else:
            items.append(value)
            origin.append(f"column '{column}'")
    return (items if present else None), origin


def _origin(field: str | None, origins: dict[str, list[str]]) -> str | None:
    """Where the value of ``field`` (``"neg[1]"``) came from (``"column 'negative_2'"``); None if not mapped."""
    base, _, index = (field or "").partition("[")
    if base not in origins:
        return None
    sources, index = origins[base], index.rstrip("]")
    if index.isdigit() and int(index) < len(sources):
        return sources[int(index)]
    return ", ".join(dict.fromkeys(s.split("[")[0] for s in sources))
