"""Helpers on representations (:class:`~m3lit.model.M3Output`) shared by the sub-batching modes.

Sub-batches arrive padded to their own lengths (paper App. B.3), so per-token outputs of different
sub-batches differ in L. :func:`concat_outputs` right-pads them to a common length with values that no
score can see: lexical weight 0 on the pad id, ColBERT zero vectors with mask False. Scores of the
concatenation therefore equal scores of the unpadded rows exactly (``m3lit.scores`` masks padding).

>>> import torch
>>> from m3lit.model import M3Output
>>> a = M3Output(sparse_weights=torch.ones(1, 2), token_ids=torch.tensor([[5, 6]]))
>>> b = M3Output(sparse_weights=torch.ones(1, 3), token_ids=torch.tensor([[5, 6, 7]]))
>>> out = concat_outputs([a, b], pad_token_id=1)
>>> out.sparse_weights.tolist(), out.token_ids.tolist()
([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], [[5, 6, 1], [5, 6, 7]])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import fields

import torch
import torch.nn.functional as F

from m3lit.model import M3Output

__all__ = ["REP_FIELDS", "concat_outputs", "pad_tokens", "present_fields", "detached_leaves", "slice_rows"]

#: The differentiable fields of M3Output (the rest, token_ids and colbert_mask, are integer/bool metadata).
REP_FIELDS = ("dense", "sparse_weights", "colbert")


def pad_tokens(out: M3Output, length: int, pad_token_id: int) -> M3Output:
    """Right-pad the per-token fields of ``out`` to ``length`` tokens (ColBERT to ``length - 1``)."""
    if _length(out) == length:
        return out  # nothing to pad: no copy
    padded = M3Output(dense=out.dense)
    if out.sparse_weights is not None:
        extra = length - out.sparse_weights.shape[1]
        padded.sparse_weights = F.pad(out.sparse_weights, (0, extra), value=0.0)  # (b, length)
    if out.token_ids is not None:
        padded.token_ids = F.pad(out.token_ids, (0, length - out.token_ids.shape[1]), value=pad_token_id)
    if out.colbert is not None:
        extra = length - 1 - out.colbert.shape[1]
        padded.colbert = F.pad(out.colbert, (0, 0, 0, extra), value=0.0)  # (b, length-1, Dc)
        padded.colbert_mask = F.pad(out.colbert_mask, (0, extra), value=False)
    return padded


def _length(out: M3Output) -> int:
    if out.token_ids is not None:
        return out.token_ids.shape[1]
    if out.colbert is not None:
        return out.colbert.shape[1] + 1
    return 0


def concat_outputs(outputs: Sequence[M3Output], pad_token_id: int) -> M3Output:
    """Concatenate sub-batch outputs row-wise, padding per-token fields to the longest sub-batch."""
    if not outputs:
        raise ValueError("concat_outputs: no outputs to concatenate")
    length = max(_length(o) for o in outputs)
    padded = [pad_tokens(o, length, pad_token_id) for o in outputs]
    merged = M3Output()
    for f in fields(M3Output):
        parts = [getattr(o, f.name) for o in padded]
        if any(p is None for p in parts):
            continue
        setattr(merged, f.name, torch.cat(parts, dim=0))
    return merged


def present_fields(out: M3Output) -> list[str]:
    """Names of the differentiable fields that ``out`` carries."""
    return [name for name in REP_FIELDS if getattr(out, name) is not None]


def detached_leaves(out: M3Output) -> M3Output:
    """A copy whose representations are fresh leaves requiring grad (gradient-cache stage 2)."""
    leaf = M3Output(token_ids=out.token_ids, colbert_mask=out.colbert_mask)
    for name in present_fields(out):
        setattr(leaf, name, getattr(out, name).detach().requires_grad_(True))
    return leaf


def slice_rows(tensor: torch.Tensor, sizes: Sequence[int]) -> Iterator[torch.Tensor]:
    """Split ``tensor`` along dim 0 into consecutive chunks of ``sizes`` rows."""
    start = 0
    for size in sizes:
        yield tensor[start : start + size]
        start += size
    if start != tensor.shape[0]:
        raise ValueError(f"slice_rows: sizes sum to {start}, tensor has {tensor.shape[0]} rows")
