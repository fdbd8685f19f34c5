"""The one JSON-lines reader and writer of m3lit, and :class:`DataError`, the one error for bad input files.

Training data (:mod:`m3lit.data.schema`), BEIR corpora and queries (:mod:`m3lit.retrieval.beir`), the
passages of ``python -m m3lit.encode`` and mining's candidate pool are all read by :func:`read_records`:

* one JSON object per line, UTF-8; blank lines are ignored;
* a line that is not UTF-8, not JSON or not an object is a :class:`DataError` naming the file and the line;
* each caller checks its own fields in a ``parse(record)`` function that raises ``DataError(problem,
  field=...)``; the reader adds the file and the line, so every message reads
  ``<file>:line <N>: field '<field>': <problem>``;
* with ``skip=`` a bad line goes to that callback (which counts or reports it) instead of being raised.

Every JSON-lines file m3lit writes (corpora, mined negatives) goes through :func:`write_jsonl`: UTF-8,
``\n`` line ends, one object per line, non-ASCII text kept as it is.

>>> err = DataError("must be a string, got int", field="text").at("corpus.jsonl", 3)
>>> str(err)
"corpus.jsonl:line 3: field 'text': must be a string, got int"
>>> (err.path, err.line, err.field, err.problem)
('corpus.jsonl', 3, 'text', 'must be a string, got int')
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from m3lit.files.errors import UserError

__all__ = ["DataError", "read_records", "write_jsonl"]

T = TypeVar("T")


class DataError(UserError, ValueError):
    """Bad input data. The message names the file, the line and the field where they are known.

    Args:
        problem: what is wrong, e.g. ``"missing"`` or ``"must be a string, got int"``.
        path: the file (None when the problem is not about one file, e.g. an unset config key).
        line: 1-based line number in ``path``.
        field: the JSON field (``"pos[2]"`` for an item of a list).
        row: 0-based row index in a table (a ``datasets`` split, a parquet file), in place of ``line``.

    ``str(error)`` is ``"<path>:line <line>: field '<field>': <problem>"`` (``"<path>:row <row>: ..."`` for
    a table row), leaving out the parts that are None; the parts stay available as attributes.

    >>> str(DataError("empty passage", field="pos[0]").at("hf:org/set::train", row=7))
    "hf:org/set::train:row 7: field 'pos[0]': empty passage"
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        row: int | None = None,
    ) -> None:
        self.problem, self.path, self.line, self.field, self.row = problem, path, line, field, row
        where = "" if line is None else f"line {line}:"
        where = where if row is None else f"row {row}:"
        parts = [] if path is None else [f"{path}:{where}"]
        parts += [] if field is None else [f"field '{field}':"]
        super().__init__(" ".join([*parts, problem]))

    def at(self, path: str | Path, line: int | None = None, *, row: int | None = None) -> DataError:
        """The same problem (and field), located in ``path`` at ``line`` (a file) or ``row`` (a table)."""
        return DataError(self.problem, path=path, line=line, field=self.field, row=row)


def read_records(
    path: str | Path,
    parse: Callable[[dict[str, Any]], T] = dict,
    *,
    skip: Callable[[DataError], None] | None = None,
) -> Iterator[tuple[int, T]]:
    """``(line number, parse(record))`` for every non-blank line of the JSON-lines file ``path``, in order.

    Args:
        path: the file; it must exist (each caller words its own "not found" error first).
        parse: checks one decoded object and returns what the caller keeps; raises :class:`DataError`
            (with ``field``) for a bad record. The default keeps the object as it is.
        skip: None (a bad line raises) or a callback that receives each bad line's located
            :class:`DataError`; that line is then left out.

    Raises:
        DataError: ``"<path>:line N: ..."`` for the first bad line when ``skip`` is None.
    """
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                record = _decode(raw)
                if record is None:
                    continue  # a blank line holds no record
                value = parse(record)
            except DataError as err:
                if skip is None:
                    raise err.at(path, number) from None
                skip(err.at(path, number))
                continue
            yield number, value


def _decode(raw: bytes) -> dict[str, Any] | None:
    """One line's JSON object, or None for a blank line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})") from None
    if not text.strip():
        return None
    try:
        record = json.loads(text.rstrip("\r\n"))  # without the newline, so an error's column is on this line
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}")
    return record


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Write each of ``rows`` (JSON-serialisable objects) as one line of ``path`` (UTF-8, ``\\n`` line ends).

    The bytes are those of ``json.dumps(row, ensure_ascii=False)`` per line: a corpus rebuilt from the same
    rows has the same sha256.
    """
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
