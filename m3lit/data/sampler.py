"""Length-grouped, shared-seed batch sampler that shards by rank itself (spec §4.3, paper App. B.1 Table 9).

Examples are grouped by (dataset, length bucket); each group has its own per-rank batch size b (long
buckets get small batches). One epoch's plan, identical on every rank:

1. ``rng = numpy.random.default_rng(seed + epoch)``;
2. for each group in order: shuffle its indices with ``rng`` and cut them into chunks of ``b * W``
   (W = world size);
3. shuffle the list of chunks with ``rng``.

Global step ``s`` is chunk ``s``: every rank draws from the same group, and rank ``r`` takes the slice
``[r*b, (r+1)*b)``, so all ranks do the same amount of work each step and the union over ranks covers
the chunk exactly once.

Tail semantics: a group's last chunk shorter than ``b * W`` is dropped with ``drop_last=True`` (the
default, as FlagEmbedding's current code); with ``drop_last=False`` it is kept with ``floor(len / W)``
examples per rank and only its last ``len mod W`` (< W) examples are dropped. Dropped examples differ
each epoch because the shuffle does. Every other example is seen exactly once per epoch.

Resume: :meth:`state_dict` is ``{epoch, step}`` (+ a fingerprint of the plan); a sampler loaded with it
yields exactly the remaining batches of that epoch, then moves on to the next.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from m3lit.files.errors import UsageError

__all__ = [
    "TABLE9_FINETUNE",
    "TABLE9_UNSUPERVISED",
    "TABLE9_EDGES",
    "BatchGroup",
    "LengthGroupedBatchSampler",
    "RankBatch",
    "assign_buckets",
    "build_groups",
]

#: Upper bucket edges in tokens: [0,500), [500,1000), [1000,2000), ..., [6000,7000), [7000, inf).
TABLE9_EDGES = (500, 1000, 2000, 3000, 4000, 5000, 6000, 7000)
#: Per-GPU batch sizes for those buckets, fine-tuning with G = 8 (Table 9 totals / 24 GPUs).
TABLE9_FINETUNE = (48, 32, 20, 18, 14, 14, 12, 10, 8)
#: Per-GPU batch sizes for stage 1 (unsupervised, G = 1; Table 9 totals / 96 GPUs).
TABLE9_UNSUPERVISED = (700, 570, 388, 288, 224, 180, 157, 128, 104)


def assign_buckets(lengths: np.ndarray, edges: Sequence[int]) -> np.ndarray:
    """Bucket id of each length: bucket k holds ``edges[k-1] <= length < edges[k]`` (edges ascending).

    >>> assign_buckets(np.array([0, 499, 500, 7000, 9999]), (500, 1000, 7000)).tolist()
    [0, 0, 1, 3, 3]
    """
    if list(edges) != sorted(set(edges)):
        raise UsageError(f"data.bucket_edges must be strictly increasing, got {list(edges)}")
    return np.searchsorted(np.asarray(edges), lengths, side="right")


def build_groups(
    lengths: Sequence[np.ndarray],
    *,
    edges: Sequence[int],
    batch_sizes: Sequence[int],
    group_sizes: Sequence[int],
    file_batch_sizes: Sequence[int | None] | None = None,
    halve: Sequence[bool] | None = None,
    max_tokens_per_batch: int | None = None,
) -> list[BatchGroup]:
    """One :class:`BatchGroup` per non-empty (dataset, bucket), with its per-rank batch size.

    Batch size, first rule that applies: the file's ``batch_size`` column; else with a token budget
    ``max(1, max_tokens_per_batch // ((G + 1) * longest))`` where ``longest`` is the group's longest
    example, which bounds the padded tokens of B queries + B*G passages; else ``batch_sizes[bucket]``,
    halved (at least 1) when ``halve`` is set for the dataset (FlagEmbedding halves ``symmetric_*`` types).

    Args:
        lengths: per dataset, (n,) bucket keys in tokens (:func:`m3lit.data.lengths.example_lengths`).
        edges: ascending upper bucket edges (``len(edges) + 1`` buckets).
        batch_sizes: per-bucket per-rank batch sizes, ``len(edges) + 1`` of them.
        group_sizes: G per dataset.
        file_batch_sizes: per dataset, the file's batch-size column or None.
        halve: per dataset, halve the table batch size.
        max_tokens_per_batch: optional token budget per rank and step.

    >>> groups = build_groups([np.array([10, 700, 20])], edges=[500], batch_sizes=[4, 2], group_sizes=[2])
    >>> [(g.bucket, g.indices.tolist(), g.batch_size) for g in groups]
    [(0, [0, 2], 4), (1, [1], 2)]
    """
    if len(batch_sizes) != len(edges) + 1:
        raise ValueError(
            f"data.bucket_batch_sizes needs len(bucket_edges) + 1 = {len(edges) + 1} entries, got {len(batch_sizes)}"
        )
    groups = []
    for d, lens in enumerate(lengths):
        buckets = assign_buckets(np.asarray(lens), edges)
        for bucket in np.unique(buckets).tolist():
            indices = np.flatnonzero(buckets == bucket)
            if file_batch_sizes is not None and file_batch_sizes[d]:
                size = int(file_batch_sizes[d])
            elif max_tokens_per_batch:
                longest = int(np.asarray(lens)[indices].max())
                size = max(1, int(max_tokens_per_batch) // ((group_sizes[d] + 1) * max(1, longest)))
            else:
                size = int(batch_sizes[bucket])
                if halve is not None and halve[d]:
                    size = max(1, size // 2)
            groups.append(BatchGroup(d, int(bucket), indices, size))
    return groups


@dataclass(frozen=True)
class BatchGroup:
    """Examples that may share a batch: one dataset, one length bucket.

    Attributes:
        dataset: index of the dataset in the sampler's dataset list.
        bucket: length bucket id.
        indices: (n,) example indices inside that dataset.
        batch_size: per-rank batch size b for this group.
    """

    dataset: int
    bucket: int
    indices: np.ndarray
    batch_size: int


@dataclass(frozen=True)
class RankBatch:
    """What one rank gets at one step: ``indices`` into dataset ``dataset`` (group ``group``)."""

    epoch: int
    step: int
    group: int
    dataset: int
    indices: np.ndarray


class LengthGroupedBatchSampler:
    """Yields this rank's :class:`RankBatch` for each global step of an epoch (see the module docstring).

    Args:
        groups: the batch groups (order matters; it is part of the plan).
        world_size: W, number of ranks.
        rank: this rank, ``0 <= rank < W``.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        drop_last: tail semantics (module docstring).
        shuffle: shuffle indices and chunks (off: groups in order, indices in order; for debugging).
    """

    def __init__(
        self,
        groups: Sequence[BatchGroup],
        *,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        drop_last: bool = True,
        shuffle: bool = True,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        for group in groups:
            if group.batch_size < 1:
                raise ValueError(f"batch size must be >= 1, got {group.batch_size} for group {group}")
        self.groups = list(groups)
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.epoch = 0
        self.step = 0
        self._plan: list[tuple[int, np.ndarray]] | None = None
        self._plan_epoch = -1

    # ------------------------------------------------------------------ plan
    def plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """The global plan of ``epoch``: a list of ``(group id, chunk of b*W example indices)``."""
        if self._plan_epoch == epoch and self._plan is not None:
            return self._plan
        rng = np.random.default_rng(self.seed + epoch)
        chunks: list[tuple[int, np.ndarray]] = []
        for g, group in enumerate(self.groups):
            order = rng.permutation(group.indices) if self.shuffle else np.asarray(group.indices)
            span = group.batch_size * self.world_size
            for start in range(0, len(order), span):
                chunk = order[start : start + span]
                if len(chunk) < span:
                    if self.drop_last or len(chunk) < self.world_size:
                        break
                    chunk = chunk[: len(chunk) // self.world_size * self.world_size]
                chunks.append((g, chunk))
        if self.shuffle:
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        self._plan, self._plan_epoch = chunks, epoch
        return chunks

    def __len__(self) -> int:
        """Steps in the current epoch."""
        return len(self.plan(self.epoch))

    @property
    def remaining(self) -> int:
        """Steps left in the current epoch."""
        return len(self) - self.step

    def batch_at(self, epoch: int, step: int) -> RankBatch:
        """This rank's share of global step ``step`` of ``epoch`` (pure; does not move the position)."""
        group_id, chunk = self.plan(epoch)[step]
        per_rank = len(chunk) // self.world_size
        share = chunk[self.rank * per_rank : (self.rank + 1) * per_rank]
        return RankBatch(epoch, step, group_id, self.groups[group_id].dataset, share)

    # ------------------------------------------------------------------ iteration
    def next_batch(self) -> RankBatch:
        """The batch at the current position, then advance; at the end of an epoch start the next one.

        Raises:
            RuntimeError: the plan has no step at all (every group is smaller than one global batch).
        """
        if self.remaining <= 0:
            self.start_next_epoch()
            if self.remaining <= 0:
                raise RuntimeError("the sampler has no full batch in an epoch")
        batch = self.batch_at(self.epoch, self.step)
        self.step += 1
        return batch

    def start_next_epoch(self) -> None:
        self.epoch, self.step = self.epoch + 1, 0

    def __iter__(self) -> Iterator[RankBatch]:
        """The rest of the current epoch (from the current position; resumes exactly after a load)."""
        if self.remaining <= 0:
            self.start_next_epoch()
        while self.remaining > 0:
            yield self.next_batch()

    # ------------------------------------------------------------------ resume
    def fingerprint(self) -> list[int]:
        """Identifies the plan's shape: world size, per-group sizes and batch sizes."""
        sizes = [
            x
            for group in self.groups
            for x in (group.dataset, group.bucket, len(group.indices), group.batch_size)
        ]
        return [self.world_size, int(self.drop_last), *sizes]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed, "fingerprint": self.fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the position. The data, batch sizes and world size must be those of the saved run.

        Raises:
            ValueError: the plan differs from the saved one, so an exact resume is impossible.
        """
        if state.get("fingerprint") != self.fingerprint() or state.get("seed") != self.seed:
            raise ValueError(
                "cannot resume the sampler exactly: the training data, batch sizes, seed or world size differ "
                "from the checkpoint's (saved fingerprint "
                f"{state.get('fingerprint')[:8] if state.get('fingerprint') else None}..., seed {state.get('seed')}; "
                f"now {self.fingerprint()[:8]}..., seed {self.seed})"
            )
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
