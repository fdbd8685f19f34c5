"""A training source: its validated datasets and the length-grouped sampler over them.

:class:`~m3lit.data.datamodule.M3DataModule` holds one per configured source (``pairs``, ``labelled``).
Loading is split in two so that every source's files are validated (:func:`load_datasets`) before any
token counting or batch planning starts (:func:`build_source`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3lit.data.dataset import TrainDataset, load_dataset
from m3lit.data.entries import expand_train_data
from m3lit.data.lengths import example_lengths
from m3lit.data.merge import merge_small_datasets
from m3lit.data.sampler import LengthGroupedBatchSampler, build_groups
from m3lit.data.schema import SkipReport
from m3lit.files.jsonl import DataError

__all__ = ["SOURCE_KEYS", "Source", "build_source", "load_datasets"]

log = logging.getLogger(__name__)

#: The ``data.*`` config key of each training source.
SOURCE_KEYS = {"pairs": "pairs_data", "labelled": "train_data"}


@dataclass
class Source:
    """One named training source: its datasets (files) and this rank's sampler over them."""

    name: str
    datasets: list[TrainDataset]
    sampler: LengthGroupedBatchSampler


def load_datasets(
    data: Any,
    *,
    group_size: int,
    on_bad_line: str,
    report: SkipReport,
    use_teacher_scores: bool,
    key: str = "data.train_data",
    columns: Any = None,
) -> list[TrainDataset]:
    """Expand ``data`` (the value of config key ``key``: :mod:`m3lit.data.entries`) and read + validate every
    dataset; ``columns`` is ``data.columns``, the default column mapping."""
    return [
        load_dataset(
            entry,
            train_group_size=group_size,
            on_bad_line=on_bad_line,
            report=report,
            use_teacher_scores=use_teacher_scores,
        )
        for entry in expand_train_data(data, key, columns)
    ]


def build_source(
    name: str,
    datasets: list[TrainDataset],
    *,
    tokenizer,
    query_max_len: int,
    passage_max_len: int,
    cache_dir: Path,
    edges: Sequence[int],
    batch_sizes: Sequence[int],
    max_tokens_per_batch: int | None,
    rank: int,
    world_size: int,
    seed: int,
    drop_last: bool,
    shuffle: bool,
    small_threshold: int = 0,
    drop_threshold: int = 0,
) -> Source:
    """Count tokens (cached), merge small files (:mod:`m3lit.data.merge`), group by (dataset, bucket) and
    build this rank's sampler. ``Source.datasets`` holds the datasets after merging.

    Raises:
        DataError: the source has no full global batch at all.
    """
    lengths = [
        example_lengths(
            ds.files,
            ds.examples,
            tokenizer,
            query_max_len,
            passage_max_len,
            cache_dir if ds.files else None,  # a table held in memory has no files to key the cache
            negatives=ds.group_size > 1,
            salt=ds.columns.key() if ds.columns is not None else "",
        )
        for ds in datasets
    ]
    datasets, lengths, merged = merge_small_datasets(
        datasets, lengths, small_threshold=small_threshold, drop_threshold=drop_threshold, source=name
    )
    groups = build_groups(
        lengths,
        edges=edges,
        batch_sizes=batch_sizes,
        group_sizes=[ds.group_size for ds in datasets],
        file_batch_sizes=[ds.batch_size for ds in datasets],
        halve=[bool(ds.type and "symmetric" in ds.type) for ds in datasets],
        max_tokens_per_batch=max_tokens_per_batch,
    )
    sampler = LengthGroupedBatchSampler(
        groups, world_size=world_size, rank=rank, seed=seed, drop_last=drop_last, shuffle=shuffle
    )
    examples = sum(len(ds) for ds in datasets)
    advice = "lower data.bucket_batch_sizes or set data.drop_last=false" + (
        "" if small_threshold else " or merge small files with data.small_threshold"
    )
    if not datasets and merged.dropped:
        raise DataError(
            f"source {name!r}: every file was merged (data.small_threshold={small_threshold}) and then dropped "
            f"({merged.dropped_lines} lines in {len(merged.dropped)} merged set(s) < data.drop_threshold="
            f"{drop_threshold}); lower data.drop_threshold"
        )
    if len(sampler) == 0:
        raise DataError(
            f"source {name!r}: no dataset has a full batch ({examples} examples in {len(datasets)} file(s), "
            f"world size {world_size}); {advice}"
        )
    used = {sampler.groups[g].dataset for g, _ in sampler.plan(0)}
    for d, ds in enumerate(datasets):
        if d not in used:
            sizes = sorted({g.batch_size for g in groups if g.dataset == d})
            log.warning(
                "source %r: dataset %s (%d examples) yields no full batch: a batch needs per-rank batch size %s "
                "x world size %d examples of one length bucket; it is not trained on (%s)",
                name, ds.name, len(ds), " or ".join(map(str, sizes)), world_size, advice,
            )  # fmt: skip
    log.info(
        "source %r: %d file(s), %d examples, %d (dataset, bucket) groups, %d steps per epoch",
        name, len(datasets), examples, len(groups), len(sampler),
    )  # fmt: skip
    return Source(name, datasets, sampler)
