"""Plumbing shared by every layer: the one JSON-lines reader with its :class:`DataError`
(:mod:`~m3lit.files.jsonl`), the cache folder with its atomic builds (:mod:`~m3lit.files.cache`), and the
command-line contract of every command: ``key=value`` options with ``--help`` (:mod:`~m3lit.files.options`)
and one ``error:`` line for a user error (:mod:`~m3lit.files.errors`).

The lowest layer: it imports nothing else from m3lit and no torch (see docs/architecture.md).
"""

from m3lit.files.jsonl import DataError, read_records

__all__ = ["DataError", "read_records"]
