"""Data pipeline: JSONL or ``datasets`` training data -> length-grouped, rank-sharded ``M3Batch`` steps.

Modules: :mod:`~m3lit.data.schema` (validation), :mod:`~m3lit.data.entries` (what a data key names),
:mod:`~m3lit.data.columns` (column mapping), :mod:`~m3lit.data.tables` (memory-mapped ``datasets`` rows),
:mod:`~m3lit.data.dataset` (loading, group sampling),
:mod:`~m3lit.data.lengths` (token-length cache), :mod:`~m3lit.data.merge` (small files merged),
:mod:`~m3lit.data.sampler` (length-grouped shared-seed batch sampler), :mod:`~m3lit.data.collate`
(tokenise + sub-batch), :mod:`~m3lit.data.streams` (a source's datasets and sampler),
:mod:`~m3lit.data.options` (``DataOptions``, the ``data.*`` keys), :mod:`~m3lit.data.datamodule`
(``M3DataModule``). Corpora that produce training files live in :mod:`m3lit.corpora`, above this layer.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "Encoded": "m3lit.data.batch",
    "M3Batch": "m3lit.data.batch",
    "DataError": "m3lit.files.jsonl",
    "M3Collator": "m3lit.data.collate",
    "LengthGroupedBatchSampler": "m3lit.data.sampler",
    "M3DataModule": "m3lit.data.datamodule",
    "DataOptions": "m3lit.data.options",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'm3lit.data' has no attribute {name!r}")
