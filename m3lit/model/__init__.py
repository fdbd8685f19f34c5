"""The model: encoder + three heads (:class:`M3Model`), its files on disk (export folder, training checkpoint),
position extension."""

from __future__ import annotations

from m3lit.model.heads import ColbertHead, DenseHead, SparseHead
from m3lit.model.m3 import M3Model, M3Output, special_token_ids
from m3lit.model.positions import extend_position_embeddings

__all__ = [
    "M3Model",
    "M3Output",
    "DenseHead",
    "SparseHead",
    "ColbertHead",
    "special_token_ids",
    "extend_position_embeddings",
]
