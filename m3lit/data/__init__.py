"""Data pipeline: JSONL training data -> length-grouped, rank-sharded ``M3Batch`` steps; demo corpus; mining.

Modules: :mod:`~m3lit.data.schema` (validation), :mod:`~m3lit.data.dataset` (files, group sampling),
:mod:`~m3lit.data.lengths` (token-length cache), :mod:`~m3lit.data.sampler` (length-grouped shared-seed
batch sampler), :mod:`~m3lit.data.collate` (tokenise + sub-batch), :mod:`~m3lit.data.datamodule`
(``M3DataModule``), :mod:`~m3lit.corpora.demo.build` (offline corpus), :mod:`~m3lit.corpora.mining` (hard negatives).
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
    "build_demo": "m3lit.corpora.demo.build",
    "DemoPaths": "m3lit.corpora.demo.build",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'm3lit.data' has no attribute {name!r}")
