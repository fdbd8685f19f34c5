"""Reading and validating training JSONL in the FlagEmbedding schema (spec §4.1); tables reuse the checks.

One JSON object per line::

    {"query": str, "pos": [str, ...], "neg": [str, ...],          # neg may be absent or [] for pairs
     "pos_scores": [float, ...], "neg_scores": [float, ...],       # optional teacher scores, aligned
     "prompt": str, "type": "normal" | "only_1neg" | "symmetric_class" | "symmetric_sts"
                             | "symmetric_clustering",
     "batch_size": int, "train_group_size": int}                  # optional, the first line decides

Other keys (e.g. ``category``) are ignored. Blank lines are ignored. Every other defect raises
:class:`~m3lit.files.jsonl.DataError` naming the file, ``line N`` and the field, before any training starts; with
``on_bad_line="skip"`` the line is skipped instead and counted in a :class:`SkipReport` (count and the
first examples per file), which the caller logs. Nothing is dropped silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from m3lit.files.errors import UsageError
from m3lit.files.jsonl import DataError, read_records

__all__ = ["KNOWN_TYPES", "Example", "SkipReport", "check_on_bad_line", "example_fields", "read_jsonl"]

#: The ``type`` values FlagEmbedding's data code understands (spec §4.2).
KNOWN_TYPES = ("normal", "only_1neg", "symmetric_class", "symmetric_sts", "symmetric_clustering")
ON_BAD_LINE = ("error", "skip")
#: How many skipped lines a SkipReport keeps verbatim per file.
MAX_SKIP_EXAMPLES = 5


@dataclass(frozen=True)
class Example:
    """One validated training line.

    Attributes:
        query: the query text (non-empty).
        pos: positive passages (at least one, each non-empty).
        neg: negative passages (possibly empty).
        pos_scores: teacher scores aligned with ``pos`` (floats), or None.
        neg_scores: teacher scores aligned with ``neg`` (floats), or None.
        prompt: per-example query instruction, or None (``null`` in the file is None, never "None").
        type: one of :data:`KNOWN_TYPES`, or None.
        line: 1-based line number in the file, or 0-based row index in a table (:mod:`m3lit.data.tables`),
            for messages and the token-length cache.
    """

    query: str
    pos: tuple[str, ...]
    neg: tuple[str, ...]
    pos_scores: tuple[float, ...] | None
    neg_scores: tuple[float, ...] | None
    prompt: str | None
    type: str | None
    line: int
    batch_size: int | None = None
    train_group_size: int | None = None


@dataclass
class SkipReport:
    """Lines skipped under ``on_bad_line="skip"``, per file."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, path: str, message: str) -> None:
        self.counts[path] = self.counts.get(path, 0) + 1
        kept = self.examples.setdefault(path, [])
        if len(kept) < MAX_SKIP_EXAMPLES:
            kept.append(message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """A multi-line human summary: per file the count and the first messages."""
        lines = [f"skipped {self.total} bad line(s) (data.on_bad_line=skip):"]
        for path, count in self.counts.items():
            lines.append(f"  {path}: {count} line(s) skipped; first: ")
            lines.extend(f"    - {msg}" for msg in self.examples[path])
        return "\n".join(lines)


def check_on_bad_line(value: str) -> str:
    if value not in ON_BAD_LINE:
        raise UsageError(f"data.on_bad_line must be one of {ON_BAD_LINE}, got {value!r}")
    return value


def read_jsonl(
    path: str | Path,
    on_bad_line: str = "error",
    report: SkipReport | None = None,
    fields: Callable[[dict], dict] | None = None,
) -> list[Example]:
    """Read and validate one JSONL file (with :func:`m3lit.files.jsonl.read_records`).

    Args:
        path: the file.
        on_bad_line: ``"error"`` raises :class:`DataError` at the first bad line; ``"skip"`` skips it
            and records it in ``report``.
        report: where skips are recorded (required for ``"skip"`` so that they are reported).
        fields: checks one decoded line into :class:`Example` keywords; None: :func:`example_fields`
            (a column mapping passes :meth:`~m3lit.data.columns.ColumnMap.fields`).

    Returns:
        The valid examples in file order.

    Raises:
        DataError: bad line (``"error"``), missing file, or no valid line at all (empty file, or every
            line skipped).
    """
    check_on_bad_line(on_bad_line)
    if on_bad_line == "skip" and report is None:
        raise ValueError("read_jsonl(on_bad_line='skip') needs a SkipReport to record the skipped lines")
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    skipped: list[DataError] = []
    parse = fields or example_fields

    def skip(error: DataError) -> None:
        skipped.append(error)
        report.add(str(path), str(error))

    examples = [
        Example(**fields, line=number)
        for number, fields in read_records(path, parse, skip=skip if on_bad_line == "skip" else None)
    ]
    if not examples and not skipped:
        raise DataError("the file is empty (no JSON lines)", path=path)
    if not examples:
        raise DataError(
            f"all {len(skipped)} line(s) are bad and were skipped; nothing left to train on", path=path
        )
    return examples


def example_fields(obj: dict) -> dict:
    """The checked fields of one decoded line, as :class:`Example` keywords (all but ``line``).

    Raises:
        DataError: ``field '<f>': <problem>`` (:func:`~m3lit.files.jsonl.read_records` adds file and line).
    """

    def fail(name: str, problem: str) -> DataError:
        return DataError(problem, field=name)

    query = obj.get("query")
    if "query" not in obj:
        raise fail("query", "missing")
    if not isinstance(query, str):
        raise fail("query", f"must be a string, got {type(query).__name__}")
    if not query.strip():
        raise fail("query", "empty")
    pos = _texts(obj, "pos", fail, required=True)
    neg = _texts(obj, "neg", fail, required=False)
    pos_scores = _scores(obj, "pos_scores", len(pos), "pos", fail)
    neg_scores = _scores(obj, "neg_scores", len(neg), "neg", fail)
    if pos_scores is not None and neg_scores is None and not neg:
        neg_scores = ()  # a pair without negatives needs no neg_scores
    if (pos_scores is None) != (neg_scores is None):
        present, absent = (
            ("pos_scores", "neg_scores") if pos_scores is not None else ("neg_scores", "pos_scores")
        )
        raise fail(absent, f"missing while '{present}' is given (teacher scores need both)")
    prompt = obj.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise fail("prompt", f"must be a string or null, got {type(prompt).__name__}")
    kind = obj.get("type")
    if kind is not None and kind not in KNOWN_TYPES:
        raise fail("type", f"unknown value {kind!r}; expected one of {', '.join(KNOWN_TYPES)}")
    return {
        "query": query,
        "pos": pos,
        "neg": neg,
        "pos_scores": pos_scores,
        "neg_scores": neg_scores,
        "prompt": prompt or None,
        "type": kind,
        "batch_size": _positive_int(obj, "batch_size", fail),
        "train_group_size": _positive_int(obj, "train_group_size", fail),
    }


def _texts(obj: dict, name: str, fail, required: bool) -> tuple[str, ...]:
    if name not in obj or obj[name] is None:
        if required:
            raise fail(name, "missing")
        return ()
    value = obj[name]
    if not isinstance(value, list):
        raise fail(name, f"must be a list of strings, got {type(value).__name__}")
    if required and not value:
        raise fail(name, "empty list (at least one passage is needed)")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise fail(f"{name}[{i}]", f"must be a string, got {type(item).__name__}")
        if not item.strip():
            raise fail(f"{name}[{i}]", "empty passage")
    return tuple(value)


def _scores(obj: dict, name: str, expected: int, texts: str, fail) -> tuple[float, ...] | None:
    if name not in obj or obj[name] is None:
        return None
    value = obj[name]
    if not isinstance(value, list):
        raise fail(name, f"must be a list of numbers, got {type(value).__name__}")
    if len(value) != expected:
        raise fail(
            name, f"has {len(value)} score(s) but '{texts}' has {expected} passage(s); they must align"
        )
    out = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise fail(f"{name}[{i}]", f"must be a finite number, got {item!r}")
        out.append(float(item))  # integer scores become floats (FlagEmbedding issue #1471)
    return tuple(out)


def _positive_int(obj: dict, name: str, fail) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise fail(name, f"must be a positive integer, got {value!r}")
    return value
