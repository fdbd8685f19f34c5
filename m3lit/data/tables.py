"""Training rows from Hugging Face ``datasets``: Hub ids, save_to_disk folders, parquet and Arrow files.

Each source is opened as a ``datasets.Dataset``, whose rows live in Arrow files that are memory-mapped,
never copied into Python: a Hub split in the ``datasets`` cache, the ``data-*.arrow`` files of a
save_to_disk folder, an ``.arrow`` file where it lies, and a parquet file once converted into the
``datasets`` cache (``HF_DATASETS_CACHE``; parquet cannot be memory-mapped). Only the columns that rows are read from
(:func:`~m3lit.data.columns.table_columns`) are decoded.

:func:`read_table` validates every row once, chunk by chunk, with the JSONL schema's checks
(:func:`~m3lit.data.schema.example_fields`, through the column mapping), and keeps only the indices of the
valid rows; :class:`TableRows` builds an :class:`~m3lit.data.schema.Example` from its row on each access.
A bad row is ``<dataset>:row <index>: field '<field>': <problem>`` (the row index counts from 0, as
``dataset[index]`` does), raised or, with ``on_bad_line="skip"``, counted in the
:class:`~m3lit.data.schema.SkipReport`.
"""

from __future__ import annotations

import contextlib
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m3lit.data.columns import table_columns
from m3lit.data.entries import DataEntry
from m3lit.data.hf_cache import local_folder_cache
from m3lit.data.schema import Example, SkipReport, example_fields
from m3lit.files.errors import one_line
from m3lit.files.jsonl import DataError

__all__ = ["TableRows", "open_table", "read_table"]

#: Rows decoded per chunk when validating or iterating.
CHUNK = 1024


class TableRows(Sequence[Example]):
    """The valid rows of a table, each read from the memory map when it is accessed.

    Args:
        table: the ``datasets.Dataset`` (its read columns only).
        rows: (n,) int64 indices of the valid rows in ``table``.
        parse: one row's dict -> :class:`~m3lit.data.schema.Example` keywords (all but ``line``).

    ``Example.line`` is the row's index in the table.
    """

    def __init__(self, table: Any, rows: np.ndarray, parse: Callable[[dict], dict]) -> None:
        self.table, self.rows, self.parse = table, rows, parse

    @property
    def lines(self) -> np.ndarray:
        """(n,) int64 row index of every example (``Example.line``), without reading a row."""
        return self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        row = int(self.rows[index])
        return Example(**self.parse(self.table[row]), line=row)

    def __iter__(self) -> Iterator[Example]:
        for start in range(0, len(self.rows), CHUNK):
            chunk = self.rows[start : start + CHUNK]
            for row, record in zip(chunk.tolist(), _records(self.table[chunk.tolist()]), strict=True):
                yield Example(**self.parse(record), line=row)

    def take(self, indices: Sequence[int]) -> TableRows:
        """The examples at ``indices`` (positions in this sequence), still unread."""
        return TableRows(self.table, self.rows[np.asarray(indices, dtype=np.int64)], self.parse)


def open_table(entry: DataEntry) -> tuple[Any, tuple[Path, ...]]:
    """Open ``entry`` (not ``"jsonl"``) as a memory-mapped ``datasets.Dataset``.

    Returns:
        ``(dataset, files)``: ``files`` are the files whose bytes are the rows (the token-length cache's
        key); empty when ``datasets`` holds the table in memory.

    Raises:
        DataError: the dataset, config or split cannot be loaded (offline, unknown id, unreadable file);
            one line naming the dataset and the reason.
    """
    import datasets

    try:
        if entry.kind == "hub":
            local = Path(entry.repo).is_dir()  # a folder in the Hub's layout: a cache of its own
            with local_folder_cache(entry.repo) if local else contextlib.nullcontext():
                table = datasets.load_dataset(
                    entry.repo, entry.config, split=entry.split, revision=None if local else entry.revision
                )
        elif entry.kind == "disk":
            table = _from_disk(datasets, entry)
        elif entry.kind == "parquet":
            table = datasets.Dataset.from_parquet(str(entry.path))
        else:
            table = datasets.Dataset.from_file(str(entry.path))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot load: {one_line(error)}", path=entry.name) from None
    if entry.kind == "parquet":
        return table, (entry.path,)
    return table, tuple(Path(f["filename"]) for f in table.cache_files)


def _from_disk(datasets: Any, entry: DataEntry) -> Any:
    """A save_to_disk folder; a split of a DatasetDict is read from its own folder (``entry.path``)."""
    if entry.split is not None and not entry.path.is_dir():
        splits = [p.name for p in entry.path.parent.iterdir() if (p / "state.json").is_file()]
        raise DataError(
            f"no split {entry.split!r} (the splits are {', '.join(sorted(splits))})", path=entry.name
        )
    return datasets.load_from_disk(str(entry.path))


def read_table(
    entry: DataEntry, on_bad_line: str = "error", report: SkipReport | None = None
) -> tuple[TableRows, tuple[Path, ...]]:
    """Open ``entry`` and validate every row (module docstring).

    Returns:
        ``(rows, files)``: the valid rows in table order, and the files they are read from.

    Raises:
        DataError: a bad row (``on_bad_line="error"``), a missing column, an empty table, or no valid row.
    """
    if on_bad_line == "skip" and report is None:
        raise ValueError("read_table(on_bad_line='skip') needs a SkipReport to record the skipped rows")
    table, files = open_table(entry)
    table = table.select_columns(table_columns(entry.columns, table.column_names, entry.name))
    parse = entry.columns.fields if entry.columns is not None else example_fields
    keep, skipped = array("q"), 0
    for start in range(0, len(table), CHUNK):
        for row, record in enumerate(_records(table[start : start + CHUNK]), start=start):
            try:
                parse(record)
            except DataError as error:
                located = error.at(entry.name, row=row)
                if on_bad_line == "error":
                    raise located from None
                report.add(entry.name, str(located))
                skipped += 1
                continue
            keep.append(row)
    if not keep and not skipped:
        raise DataError("the table has no rows", path=entry.name)
    if not keep:
        raise DataError(
            f"all {skipped} row(s) are bad and were skipped; nothing left to train on", path=entry.name
        )
    return TableRows(table, np.frombuffer(keep, dtype=np.int64), parse), files


def _records(columns: dict[str, list]) -> list[dict[str, Any]]:
    """A ``dataset[a:b]`` chunk (column -> values) as one dict per row."""
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
