"""Row-wise accumulation of the input-embedding gradient: no vocabulary-sized table per encoder call.

A backward through ``nn.Embedding`` normally builds a dense (V, H) gradient, a freshly allocated and
zero-filled table, once per encoder call. A step encodes queries and passages in separate calls (and the
gradient cache once per sub-batch), so on the 250,002-row vocabulary of XLM-R / BGE-M3 a CPU step
allocated, page-faulted and zero-filled two 128 MB tables at H = 128 (1 GB each at H = 1024) and added
them: ~0.3-0.5 s of a 0.7-2 s step (``benchmarks/train.py``), whereas a step looks up ~9k rows.

With ``nn.Embedding.sparse`` on, the embedding's backward emits only the looked-up rows (a sparse COO
gradient, padding rows excluded as before) and autograd's gradient accumulation adds them in place into
the parameter's existing dense ``.grad``: a sequential index-add, deterministic for any thread count.
:func:`row_wise_embedding_grad` makes sure that dense buffer exists and turns the flag on for the block
only, and :func:`zero_grad_keeping` zeroes the buffer in place between steps (its pages stay mapped)
instead of dropping it. ``.grad`` therefore stays a dense tensor with the same values (up to the summation
order of repeated token ids, ~1e-7 relative), so clipping, the fused AdamW step and checkpoints are
unchanged. ``M3LitModule`` uses it on single-process CPU runs; under DDP/FSDP (which reduce gradients
through hooks that expect dense tensors) and on CUDA (where sparse accumulation uses atomics) the
embedding keeps its dense backward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["row_wise_embedding_grad", "zero_grad_keeping"]


@contextmanager
def row_wise_embedding_grad(embedding: nn.Module | None) -> Iterator[None]:
    """Within the block, backward adds the looked-up rows of ``embedding`` into its dense ``.grad``.

    Args:
        embedding: the encoder's input embedding (``encoder.get_input_embeddings()``); anything that is
            not a trainable, dense-gradient ``nn.Embedding`` is left alone (the block runs unchanged).

    The (V, H) ``.grad`` buffer is created zero-filled if missing; a sparse ``.grad`` is never produced.
    The backward must run inside the block (the flag is read when the lookup's graph is built and the
    buffer must exist when the gradient arrives).
    """
    if not isinstance(embedding, nn.Embedding) or embedding.sparse or not embedding.weight.requires_grad:
        yield
        return
    weight = embedding.weight
    if weight.grad is None:
        weight.grad = torch.zeros_like(weight)
    embedding.sparse = True
    try:
        yield
    finally:
        embedding.sparse = False


def zero_grad_keeping(optimizer: torch.optim.Optimizer, keep: torch.Tensor | None) -> None:
    """``optimizer.zero_grad(set_to_none=True)``, except ``keep.grad``, which is zeroed in place."""
    buffer = None if keep is None else keep.grad
    optimizer.zero_grad(set_to_none=True)
    if buffer is not None and not buffer.is_sparse:
        keep.grad = buffer.zero_()
