"""Sub-batched training steps: the paper's split-batch and an exact gradient cache.

Both take the sub-batches of one :class:`~m3lit.data.batch.M3Batch` and a ``loss_fn(q, p)`` that maps
the concatenated query and passage representations to an ``M3LossOutput``; both call ``backward`` on
scalars whose gradients w.r.t. the parameters are those of the full-batch loss.

* :func:`split_batch_step` (BGE-M3, arXiv:2402.03216 App. B.3, Algorithm 1): encode every sub-batch
  with graph (with gradient checkpointing on, only layer inputs stay alive), concatenate, one backward.
  Activation memory still grows with the number of sub-batches.
* :func:`gradcache_step` (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
  Limited Setup", arXiv:2101.06983):

  1. encode every sub-batch WITHOUT a graph, remembering the RNG state before each one;
  2. compute the loss on the concatenated representations (detached leaves) and the gradients of the
     loss w.r.t. those representations (dense, sparse weights, ColBERT vectors);
  3. for each sub-batch: restore its RNG state (same dropout masks), re-encode WITH a graph and
     back-propagate the surrogate ``sum(rep * cached_grad)``, whose parameter gradient is exactly the
     sub-batch's share of dLoss/dtheta. Only one sub-batch's activations are alive at a time, so peak
     activation memory does not grow with the batch. Under DDP all but the last backward run inside
     ``no_sync`` (gradients accumulate locally, the last backward all-reduces them once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch

from m3lit.data.batch import Encoded
from m3lit.model import M3Model, M3Output
from m3lit.training.reps import concat_outputs, detached_leaves, present_fields, slice_rows

__all__ = ["RngState", "encode_sub_batches", "split_batch_step", "gradcache_step"]

LossFn = Callable[[M3Output, M3Output], object]  # returns an M3LossOutput (needs ``.loss``)
BackwardFn = Callable[[torch.Tensor], None]


@dataclass
class RngState:
    """The CPU (and, for a CUDA tensor's device, the CUDA) RNG state at one moment, to replay dropout."""

    cpu: torch.Tensor
    device: torch.device
    cuda: torch.Tensor | None = None

    @classmethod
    def capture(cls, device: torch.device) -> RngState:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), device, cuda)

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block with this RNG state; the surrounding RNG state is restored afterwards."""
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def _encode(model: M3Model, sub: Encoded, heads: dict[str, bool]) -> M3Output:
    return model(sub.input_ids, sub.attention_mask, **heads)


def encode_sub_batches(
    model: M3Model, subs: Sequence[Encoded], heads: dict[str, bool], pad_token_id: int
) -> M3Output:
    """Encode each sub-batch (with graph if grad is enabled) and concatenate the outputs."""
    return concat_outputs([_encode(model, sub, heads) for sub in subs], pad_token_id)


def split_batch_step(
    model: M3Model,
    queries: Sequence[Encoded],
    passages: Sequence[Encoded],
    *,
    heads: dict[str, bool],
    loss_fn: LossFn,
    backward: BackwardFn,
    pad_token_id: int,
):
    """Encode all sub-batches with graph, compute the loss once, back-propagate once (App. B.3).

    Gradient checkpointing is the model's own switch (``M3Model.gradient_checkpointing``); with it off and
    a single sub-batch this is the plain full-batch step.
    """
    q = encode_sub_batches(model, queries, heads, pad_token_id)
    p = encode_sub_batches(model, passages, heads, pad_token_id)
    out = loss_fn(q, p)
    backward(out.loss)
    return out


def gradcache_step(
    model: M3Model,
    queries: Sequence[Encoded],
    passages: Sequence[Encoded],
    *,
    heads: dict[str, bool],
    loss_fn: LossFn,
    backward: BackwardFn,
    pad_token_id: int,
    no_sync: Callable[[], AbstractContextManager] = nullcontext,
):
    """Exact gradient cache (module docstring): same loss and parameter gradients as the plain step.

    Args:
        model: the M3Model (in train mode for dropout; its RNG use is replayed per sub-batch).
        queries / passages: sub-batches, each (b, L_i) ids and mask.
        heads: which heads to compute (``sparse`` / ``colbert`` flags for ``M3Model.forward``).
        loss_fn: (q, p) -> M3LossOutput on concatenated representations; may all-gather across ranks.
        backward: back-propagates a scalar into the parameters (``LightningModule.manual_backward``).
        pad_token_id: id used to pad per-token outputs when sub-batch lengths differ.
        no_sync: context manager that suspends DDP's gradient all-reduce; entered for every re-encoding
            backward except the last.

    Returns:
        The loss output computed in stage 2, its loss detached (no graph: the representations it was computed
        from are freed before the re-encoding).
    """
    subs = [*queries, *passages]
    states: list[RngState] = []
    outputs: list[M3Output] = []
    with torch.no_grad():  # stage 1: representations only
        for sub in subs:
            states.append(RngState.capture(sub.input_ids.device))
            outputs.append(_encode(model, sub, heads))
    n_q = len(queries)
    sizes = ([len(s) for s in queries], [len(s) for s in passages])
    q = detached_leaves(concat_outputs(outputs[:n_q], pad_token_id))
    p = detached_leaves(concat_outputs(outputs[n_q:], pad_token_id))
    del outputs
    out = loss_fn(q, p)  # stage 2: loss and gradients w.r.t. the representations
    leaves = [
        (side, name, getattr(rep, name)) for side, rep in enumerate((q, p)) for name in present_fields(rep)
    ]
    grads = torch.autograd.grad(out.loss, [leaf for *_, leaf in leaves], allow_unused=True)
    cached = {
        (side, name): list(slice_rows(grad, sizes[side]))
        for (side, name, _), grad in zip(leaves, grads, strict=True)
        if grad is not None
    }
    # The representations are not needed any more: the loss's graph (AccumulateGrad nodes) and these names
    # are the last references to the (B*G, L, Dc) ColBERT leaves, so stage 3 runs without them.
    out.loss = out.loss.detach()
    del q, p, leaves, grads
    # stage 3: re-encode each sub-batch with graph and inject its cached gradient
    for index, (sub, state) in enumerate(zip(subs, states, strict=True)):
        side, position = (0, index) if index < n_q else (1, index - n_q)
        with state.replay():
            rep = _encode(model, sub, heads)
        terms = []
        for name in present_fields(rep):
            grad_list = cached.get((side, name))
            if grad_list is None:
                continue
            value = getattr(rep, name)
            grad = grad_list[position][tuple(slice(0, n) for n in value.shape)]  # drop concat padding
            terms.append((value * grad.to(value.dtype)).sum())
        last = index == len(subs) - 1
        if not terms:
            if not last:
                continue
            # The last backward must run (it is the one DDP synchronises on): a zero that touches the graph.
            terms = [getattr(rep, name).sum() * 0.0 for name in present_fields(rep)]
        with nullcontext() if last else no_sync():
            backward(torch.stack(terms).sum())
    return out
