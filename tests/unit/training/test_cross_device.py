"""Cross-device negatives: ``gather_with_grad`` and ``m3_objective`` on 1 and on 2 gloo processes.

The 2-process checks start raw ``torch.distributed`` workers (no Lightning), so they take seconds. The
reference is a single process holding every rank's tensors: its loss over the gathered batch is the
mean of the ranks' losses, and a rank's gradient must be W times the reference gradient of its own
rows (DDP then averages W such gradients back to the reference).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from m3lit.model import M3Output
from m3lit.training.cross_device import dist_info, gather_no_grad, gather_with_grad
from m3lit.training.objective import m3_objective
from m3lit.training.stages import stage_spec

W, B, G, D = 2, 3, 2, 8
ROWS = {0: 3, 1: 2}  # uneven query counts per rank (a short last batch)
LENGTHS = {0: 5, 1: 7}  # sub-batches padded to different lengths on each rank


def test_single_process_is_identity():
    assert dist_info() == (0, 1)
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x
    ids = torch.tensor([[0, 5, 2]])
    assert gather_no_grad(ids) is ids


def test_objective_without_process_group_uses_local_negatives():
    """negatives_cross_device on one process (no process group) runs and equals the local loss."""
    q, p = _rank_outputs(0)
    kwargs = {"group_size": G, "stage": stage_spec("unified_self_distill")}
    with_flag = m3_objective(
        q, p, negatives_cross_device=True, cross_device_heads=("dense", "sparse", "colbert"), **kwargs
    )
    without = m3_objective(q, p, **kwargs)
    torch.testing.assert_close(with_flag.loss, without.loss, rtol=0, atol=0)


def _rank_outputs(rank: int, requires_grad: bool = False) -> tuple[M3Output, M3Output]:
    """Deterministic representations of ``rank``: ROWS[rank] queries, ROWS[rank]*G passages."""
    gen = torch.Generator().manual_seed(100 + rank)
    n_q, length = ROWS[rank], LENGTHS[rank]

    def side(n):
        dense = torch.nn.functional.normalize(torch.randn(n, D, generator=gen), dim=-1)
        ids = torch.randint(4, 30, (n, length), generator=gen)
        ids[:, 0] = 0
        weights = torch.rand(n, length, generator=gen)
        weights[:, 0] = 0
        colbert = torch.nn.functional.normalize(torch.randn(n, length - 1, D, generator=gen), dim=-1)
        mask = torch.ones(n, length - 1, dtype=torch.bool)
        mask[0, -2:] = False
        colbert = colbert * mask.unsqueeze(-1)
        out = M3Output(dense=dense, sparse_weights=weights, token_ids=ids, colbert=colbert, colbert_mask=mask)
        if requires_grad:
            for name in ("dense", "sparse_weights", "colbert"):
                setattr(out, name, getattr(out, name).clone().requires_grad_(True))
        return out

    return side(n_q), side(n_q * G)


def _concat(outputs: list[M3Output]) -> M3Output:
    from m3lit.training.reps import concat_outputs

    return concat_outputs(outputs, pad_token_id=1)


#: (gathered heads, stage): the reference (dense only), and the extension to every head.
CASES = [
    (("dense",), "dense"),
    (("dense",), "unified_self_distill"),
    (("dense", "sparse", "colbert"), "unified_self_distill"),
]


def _worker(rank: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=W)
    try:
        for heads, stage in CASES:
            _check(rank, heads, stage)
    finally:
        dist.destroy_process_group()


def _check(rank: int, heads: tuple[str, ...], stage: str) -> None:
    # 1. gather_with_grad: forward concatenates (padding trailing dims), backward sums over ranks
    x = torch.full((ROWS[rank], LENGTHS[rank]), float(rank + 1), requires_grad=True)
    gathered = gather_with_grad(x)
    assert gathered.shape == (sum(ROWS.values()), max(LENGTHS.values()))
    assert torch.equal(gathered[: ROWS[0], : LENGTHS[0]], torch.full((ROWS[0], LENGTHS[0]), 1.0))
    assert torch.equal(gathered[: ROWS[0], LENGTHS[0] :], torch.zeros(ROWS[0], LENGTHS[1] - LENGTHS[0]))
    (gathered * (rank + 1)).sum().backward()  # rank r weights every gathered row by r + 1
    assert torch.equal(x.grad, torch.full_like(x, 1.0 + 2.0)), x.grad  # sum over ranks

    # 2. the objective: this rank's loss and gradients vs. one process over the gathered batch
    q, p = _rank_outputs(rank, requires_grad=True)
    spec = stage_spec(stage)
    out = m3_objective(q, p, group_size=G, stage=spec, negatives_cross_device=True, cross_device_heads=heads)
    out.loss.backward()
    if "dense" in heads:
        assert out.parts["dense"].isfinite()

    ref_q, ref_p = zip(*[_rank_outputs(r, requires_grad=True) for r in range(W)], strict=True)
    offsets = [0, ROWS[0]]
    losses = []
    all_p = _concat(list(ref_p))
    for r in range(W):  # each rank's loss, computed with everyone's passages in one process
        losses.append(_objective_on(ref_q[r], all_p, ref_p[r], offsets[r], heads, spec))
    total = torch.stack(losses).mean()  # the single-process loss over the gathered batch
    total.backward()
    torch.testing.assert_close(out.loss.detach(), losses[rank].detach(), rtol=1e-6, atol=1e-6)
    for name in ("dense", "sparse_weights", "colbert"):
        for mine, ref in (
            (getattr(q, name), getattr(ref_q[rank], name)),
            (getattr(p, name), getattr(ref_p[rank], name)),
        ):
            if ref.grad is None:
                assert mine.grad is None or not mine.grad.any()
                continue
            torch.testing.assert_close(
                mine.grad, W * ref.grad, rtol=1e-5, atol=1e-6, msg=f"rank {rank} {name}"
            )


def _objective_on(q: M3Output, all_p: M3Output, own_p: M3Output, offset: int, heads, spec):
    """m3_objective with passages of every rank for the gathered heads, computed in one process."""
    from m3lit.losses import m3_loss
    from m3lit.scores import colbert_scores, dense_scores, sparse_scores

    def pick(head):
        return all_p if head in heads else own_p

    dense = dense_scores(q.dense, pick("dense").dense)
    sparse = colbert = None
    if spec.sparse:
        sp = pick("sparse")
        sparse = sparse_scores(q.sparse_weights, q.token_ids, sp.sparse_weights, sp.token_ids)
        cb = pick("colbert")
        colbert = colbert_scores(q.colbert, q.colbert_mask, cb.colbert, cb.colbert_mask)
    return m3_loss(
        dense,
        sparse,
        colbert,
        G,
        self_distill=spec.self_distill,
        query_offset=offset if "dense" in heads else 0,
    ).loss
