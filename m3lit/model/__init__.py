"""The model: encoder + three heads (:class:`M3Model`), its files on disk (export folder, training checkpoint),
position extension.

The names below are imported on first use, so a light submodule (:mod:`m3lit.model.reference`,
:mod:`m3lit.model.device`) can be imported without torch's model code."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "M3Model": "m3lit.model.m3",
    "M3Output": "m3lit.model.m3",
    "special_token_ids": "m3lit.model.m3",
    "DenseHead": "m3lit.model.heads",
    "SparseHead": "m3lit.model.heads",
    "ColbertHead": "m3lit.model.heads",
    "extend_position_embeddings": "m3lit.model.positions",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'm3lit.model' has no attribute {name!r}")
