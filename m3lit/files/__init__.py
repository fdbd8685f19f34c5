"""Files on disk, shared by every layer: the one JSON-lines reader with its :class:`DataError`
(:mod:`~m3lit.files.jsonl`), and the cache folder with its atomic builds (:mod:`~m3lit.files.cache`).

The lowest layer: it imports nothing else from m3lit and no torch (see docs/architecture.md).
"""

from m3lit.files.jsonl import DataError, read_records

__all__ = ["DataError", "read_records"]
