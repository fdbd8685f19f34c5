"""The model: encoder + three heads (:class:`M3Model`), and the checkpoint layout."""

from m3lit.model.heads import ColbertHead, DenseHead, SparseHead
from m3lit.model.m3 import M3Model, M3Output, special_token_ids

__all__ = ["M3Model", "M3Output", "DenseHead", "SparseHead", "ColbertHead", "special_token_ids"]
