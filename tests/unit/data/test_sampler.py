"""Invariants of the length-grouped, shared-seed, rank-sharding batch sampler on tiny in-memory data."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from m3lit.data.sampler import (
    TABLE9_EDGES,
    TABLE9_FINETUNE,
    TABLE9_UNSUPERVISED,
    BatchGroup,
    LengthGroupedBatchSampler,
    assign_buckets,
    build_groups,
)

EDGES = (10, 20)
SIZES = (4, 3, 2)


def _lengths(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 30, size=n) for n in (37, 23, 11)]


def _groups() -> list[BatchGroup]:
    return build_groups(_lengths(), edges=EDGES, batch_sizes=SIZES, group_sizes=[8, 8, 8])


def _samplers(world: int, drop_last: bool = True, seed: int = 7) -> list[LengthGroupedBatchSampler]:
    groups = _groups()
    return [
        LengthGroupedBatchSampler(groups, world_size=world, rank=r, seed=seed, drop_last=drop_last)
        for r in range(world)
    ]


def test_table9_defaults_match_the_paper():
    assert TABLE9_EDGES == (500, 1000, 2000, 3000, 4000, 5000, 6000, 7000)
    assert TABLE9_FINETUNE == (48, 32, 20, 18, 14, 14, 12, 10, 8)
    assert [x * 24 for x in TABLE9_FINETUNE] == [1152, 768, 480, 432, 336, 336, 288, 240, 192]
    assert TABLE9_UNSUPERVISED == (700, 570, 388, 288, 224, 180, 157, 128, 104)


def test_assign_buckets_against_a_naive_loop():
    lengths = np.arange(0, 40)
    expected = [sum(x >= e for e in EDGES) for x in lengths]
    assert assign_buckets(lengths, EDGES).tolist() == expected
    with pytest.raises(ValueError, match="strictly increasing"):
        assign_buckets(lengths, (20, 10))


def test_build_groups_partition_and_batch_sizes():
    lengths = _lengths()
    groups = build_groups(lengths, edges=EDGES, batch_sizes=SIZES, group_sizes=[8, 8, 8])
    for d, lens in enumerate(lengths):
        mine = [g for g in groups if g.dataset == d]
        covered = np.sort(np.concatenate([g.indices for g in mine]))
        assert covered.tolist() == list(range(len(lens)))  # a partition of the dataset
        for g in mine:
            lo = ([0, *EDGES])[g.bucket]
            hi = ([*EDGES, 10**9])[g.bucket]
            assert ((lens[g.indices] >= lo) & (lens[g.indices] < hi)).all()
            assert g.batch_size == SIZES[g.bucket]


def test_build_groups_file_column_halving_and_token_budget():
    lengths = [np.array([5, 15, 25]), np.array([5, 6]), np.array([12, 18])]
    groups = build_groups(
        lengths,
        edges=EDGES,
        batch_sizes=SIZES,
        group_sizes=[8, 8, 3],
        file_batch_sizes=[None, 5, None],
        halve=[True, True, False],
    )
    sizes = {(g.dataset, g.bucket): g.batch_size for g in groups}
    # halved table sizes (4 -> 2, 3 -> 1, 2 -> 1); the file column wins over halving
    assert sizes == {(0, 0): 2, (0, 1): 1, (0, 2): 1, (1, 0): 5, (2, 1): 3}
    budget = build_groups(
        lengths, edges=EDGES, batch_sizes=SIZES, group_sizes=[8, 8, 3], max_tokens_per_batch=1000
    )
    sizes = {(g.dataset, g.bucket): g.batch_size for g in budget}
    # budget // ((G + 1) * longest example of the group), at least 1
    assert sizes == {
        (0, 0): 1000 // (9 * 5),
        (0, 1): 1000 // (9 * 15),
        (0, 2): 1000 // (9 * 25),
        (1, 0): 1000 // (9 * 6),
        (2, 1): 1000 // (4 * 18),
    }
    with pytest.raises(ValueError, match="len\\(bucket_edges\\) \\+ 1"):
        build_groups(lengths, edges=EDGES, batch_sizes=(1, 2), group_sizes=[8, 8, 8])


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [True, False])
def test_same_bucket_on_all_ranks_and_exact_cover(world, drop_last):
    samplers = _samplers(world, drop_last)
    per_rank = [list(s) for s in samplers]
    steps = len(per_rank[0])
    assert steps > 0 and all(len(batches) == steps for batches in per_rank)
    seen = Counter()
    for step in range(steps):
        batches = [per_rank[r][step] for r in range(world)]
        assert len({(b.group, b.dataset) for b in batches}) == 1  # one (dataset, bucket) per global step
        group = samplers[0].groups[batches[0].group]
        sizes = {len(b.indices) for b in batches}
        assert len(sizes) == 1  # every rank does the same amount of work
        if drop_last:
            assert sizes == {group.batch_size}
        for b in batches:
            assert b.step == step and b.epoch == 0
            seen.update((b.dataset, int(i)) for i in b.indices)
    assert max(seen.values()) == 1  # nothing repeated
    for g in samplers[0].groups:  # documented tail: drop_last drops len mod (b*W); else (len mod (b*W)) mod W
        covered = sum((g.dataset, int(i)) in seen for i in g.indices)
        tail = len(g.indices) % (g.batch_size * world)
        dropped = tail if drop_last else tail % world
        assert covered == len(g.indices) - dropped


def test_epoch_reshuffle_differs_and_is_reproducible():
    a, b = _samplers(2)[0], _samplers(2)[0]
    epoch0 = [(g, c.tolist()) for g, c in a.plan(0)]
    assert epoch0 == [(g, c.tolist()) for g, c in b.plan(0)]  # same seed -> same plan
    assert epoch0 != [(g, c.tolist()) for g, c in a.plan(1)]  # a new epoch reshuffles
    other = _samplers(2, seed=8)[0]
    assert epoch0 != [(g, c.tolist()) for g, c in other.plan(0)]  # another seed differs
    # iterating two epochs walks the same plans
    first = list(a)
    second = list(a)
    assert [x.indices.tolist() for x in first] == [
        a.batch_at(0, s).indices.tolist() for s in range(len(first))
    ]
    assert all(x.epoch == 1 for x in second) and len(second) == len(a.plan(1))


@pytest.mark.parametrize("world", [1, 3])
def test_resume_from_any_step_yields_exactly_the_remaining_batches(world):
    rank = world - 1
    reference = LengthGroupedBatchSampler(_groups(), world_size=world, rank=rank, seed=3)
    full = [
        (b.epoch, b.step, b.indices.tolist())
        for b in (reference.next_batch() for _ in range(2 * len(reference) + 1))
    ]
    steps = len(LengthGroupedBatchSampler(_groups(), world_size=world, rank=rank, seed=3))
    for k in range(steps + 1):
        live = LengthGroupedBatchSampler(_groups(), world_size=world, rank=rank, seed=3)
        consumed = [live.next_batch() for _ in range(k)]
        state = live.state_dict()
        resumed = LengthGroupedBatchSampler(_groups(), world_size=world, rank=rank, seed=3)
        resumed.load_state_dict(state)
        rest = [(b.epoch, b.step, b.indices.tolist()) for b in resumed]  # rest of this epoch
        if k == steps:  # saved at the epoch end: the resumed iterator runs the next epoch
            assert rest == full[steps : 2 * steps]
        else:
            assert rest == full[k:steps]
            assert [(b.epoch, b.step, b.indices.tolist()) for b in consumed] + rest == full[:steps]


def test_load_state_dict_refuses_a_different_plan():
    state = _samplers(2)[0].state_dict()
    with pytest.raises(ValueError, match="cannot resume the sampler exactly"):
        _samplers(3)[0].load_state_dict(state)
    with pytest.raises(ValueError, match="cannot resume"):
        _samplers(2, seed=99)[0].load_state_dict(state)


def test_shuffle_off_keeps_order_and_invalid_rank():
    groups = [BatchGroup(0, 0, np.arange(6), 2)]
    sampler = LengthGroupedBatchSampler(groups, world_size=1, rank=0, shuffle=False)
    assert [b.indices.tolist() for b in sampler] == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="rank"):
        LengthGroupedBatchSampler(groups, world_size=2, rank=2)
