"""Cross-device negatives: all-gather representations with gradients flowing back to the local slice.

BGE-M3 (spec §3.1, §4.4) scores each rank's B queries against the passages of ALL W ranks (W*B*G
candidates). :func:`gather_with_grad` concatenates every rank's rows; its backward sums the gradient of
the gathered tensor over ranks (all-reduce) and hands each rank the rows it contributed. With DDP's
gradient averaging this makes the synchronised gradient exactly the gradient of the mean loss over all
W*B queries, i.e. what one process computes on the gathered batch. (The reference instead overwrites the
own slice of a no-grad gather, so a rank's passages only receive the gradient of its own queries' loss.)

Without an initialised process group (one process, a notebook, a CPU run) every function here is the
identity with rank 0 and world size 1, so ``negatives_cross_device`` never crashes (spec §7 item 14).
Rows may differ between ranks (a short last batch) and trailing dimensions too (sub-batches padded to
their own length): tensors are padded with ``pad_value`` to the largest shape before gathering.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["dist_info", "all_gather_sizes", "gather_with_grad", "gather_no_grad"]


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_sizes(shape: torch.Size | tuple[int, ...], device: torch.device) -> list[tuple[int, ...]]:
    """Every rank's ``shape`` (same number of dimensions on all ranks), in rank order."""
    rank, world = dist_info()
    if world == 1:
        return [tuple(shape)]
    local = torch.tensor(list(shape), dtype=torch.long, device=device)
    out = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(out, local)
    return [tuple(int(x) for x in t.tolist()) for t in out]


def _pad_to(tensor: torch.Tensor, shape: tuple[int, ...], value: float | int | bool) -> torch.Tensor:
    pad: list[int] = []
    for have, want in zip(reversed(tensor.shape), reversed(shape), strict=True):
        pad += [0, want - have]
    if not any(pad):
        return tensor.contiguous()
    if tensor.dtype == torch.bool:
        return F.pad(tensor.to(torch.uint8), pad, value=int(value)).bool()
    return F.pad(tensor, pad, value=value).contiguous()


def _gather_padded(tensor: torch.Tensor, shapes: list[tuple[int, ...]], value) -> torch.Tensor:
    """All-gather ``tensor`` padded to the max shape; rows cut back to each rank's own count."""
    full = tuple(max(s[d] for s in shapes) for d in range(tensor.dim()))
    padded = _pad_to(tensor, full, value)
    send = padded.to(torch.uint8) if padded.dtype == torch.bool else padded  # gloo has no bool
    chunks = [torch.empty_like(send) for _ in shapes]
    dist.all_gather(chunks, send)
    chunks = [c.bool() if tensor.dtype == torch.bool else c for c in chunks]
    return torch.cat([c[: s[0]] for c, s in zip(chunks, shapes, strict=True)], dim=0)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, value: float) -> torch.Tensor:  # type: ignore[override]
        rank, _ = dist_info()
        shapes = all_gather_sizes(tensor.shape, tensor.device)
        ctx.rows = (sum(s[0] for s in shapes[:rank]), tensor.shape[0])
        ctx.trailing = tensor.shape[1:]
        return _gather_padded(tensor, shapes, value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every rank's loss may depend on our rows
        start, rows = ctx.rows
        local = grad[start : start + rows]
        index = tuple(slice(0, n) for n in ctx.trailing)  # drop the padding of trailing dims
        return local[(slice(None), *index)], None


def gather_with_grad(tensor: torch.Tensor, pad_value: float = 0.0) -> torch.Tensor:
    """Concatenate ``tensor`` (n_r, ...) over ranks -> (sum_r n_r, max ...), differentiable.

    Args:
        tensor: this rank's rows; trailing dimensions may differ between ranks and are right-padded.
        pad_value: fill for that padding (0 for weights and vectors, whose scores ignore it).

    Returns:
        The gathered tensor; rows of rank r start at ``sum(n_s for s < r)``. On one process: ``tensor``.
    """
    if dist_info()[1] == 1:
        return tensor
    return _GatherWithGrad.apply(tensor, pad_value)


def gather_no_grad(tensor: torch.Tensor, pad_value: int | float | bool = 0) -> torch.Tensor:
    """Like :func:`gather_with_grad` for tensors without gradient (token ids, masks, teacher scores)."""
    if dist_info()[1] == 1:
        return tensor
    with torch.no_grad():
        return _gather_padded(tensor, all_gather_sizes(tensor.shape, tensor.device), pad_value)
