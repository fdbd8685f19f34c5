"""The model: encoder + three heads (:class:`M3Model`), its files on disk (export folder, training checkpoint),
position extension.

The names below are imported from their submodule on first use, so that a light submodule
(:mod:`m3lit.model.reference`, which the package root imports) does not pull in torch's model code."""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Public name -> the submodule of m3lit.model that defines it.
_HOME = {
    **dict.fromkeys(("M3Model", "M3Output", "special_token_ids"), "m3"),
    **dict.fromkeys(("DenseHead", "SparseHead", "ColbertHead"), "heads"),
    "extend_position_embeddings": "positions",
}
__all__ = list(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'm3lit.model' has no attribute {name!r}")
    return getattr(import_module(f"m3lit.model.{_HOME[name]}"), name)
