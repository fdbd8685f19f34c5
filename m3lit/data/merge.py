"""Small-dataset merging (spec §4.3 ``small_threshold`` / ``drop_threshold``).

Every file is one dataset, and a batch never mixes datasets; a file smaller than one global batch would
never fill one. Inside one folder of a source, the files with fewer than ``small_threshold`` lines are
therefore concatenated (in file order) into one merged dataset whose batch size is the smallest of theirs
(FlagEmbedding's rule); the merged set is dropped, with a warning naming its files, when it still has fewer
than ``drop_threshold`` lines. Only files that can share a batch are merged together: same folder, group
size G, no-in-batch-negatives flag, teacher-score use and ``symmetric`` type (which halves the table batch
size), so each such class gives at most one merged set. Threshold 0 turns either rule off.

The result depends on the files alone (no randomness), so the shared-seed sampler plans the same batches on
every rank and after a resume.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from m3lit.data.dataset import TrainDataset

__all__ = ["MergeReport", "merge_small_datasets"]

log = logging.getLogger(__name__)


@dataclass
class MergeReport:
    """What :func:`merge_small_datasets` did: names of the merged files per merged set, and of the dropped."""

    merged: list[list[str]] = field(default_factory=list)  # per merged set: its member files' names
    dropped: list[str] = field(default_factory=list)  # names of dropped (merged) sets
    dropped_lines: int = 0


def merge_small_datasets(
    datasets: Sequence[TrainDataset],
    lengths: Sequence[np.ndarray],
    *,
    small_threshold: int,
    drop_threshold: int,
    source: str = "",
) -> tuple[list[TrainDataset], list[np.ndarray], MergeReport]:
    """Merge the small datasets of each folder and drop merged sets below ``drop_threshold`` (module doc).

    Args:
        datasets: the source's datasets in file order.
        lengths: per dataset, its (n,) bucket keys (:func:`m3lit.data.lengths.example_lengths`), merged alike.
        small_threshold: files with fewer lines are merged (0: off).
        drop_threshold: a merged set with fewer lines is dropped (0: off).
        source: the source's name, for the log.

    Returns:
        ``(datasets, lengths, report)``: a merged set takes the place of its first file; the other datasets
        keep their order. A merged set's name is ``FOLDER/merged(N files)``, its batch size the smallest
        ``batch_size`` column of its files (None when none has one: the bucket table applies to all alike).
    """
    if small_threshold < 0 or drop_threshold < 0:
        raise ValueError(
            f"data.small_threshold and data.drop_threshold must be >= 0, got {small_threshold}, {drop_threshold}"
        )
    report = MergeReport()
    if small_threshold == 0:
        return list(datasets), list(lengths), report
    classes: dict[tuple, list[int]] = {}
    for i, ds in enumerate(datasets):
        if len(ds) < small_threshold:
            key = (str(ds.path.parent), ds.group_size, ds.no_in_batch_neg, ds.has_scores, _symmetric(ds))
            classes.setdefault(key, []).append(i)
    first_of = {members[0]: members for members in classes.values()}
    merged_away = {i for members in classes.values() for i in members[1:]}
    out_ds, out_len = [], []
    for i, ds in enumerate(datasets):
        if i in merged_away:
            continue
        members = first_of.get(i)
        if members is None:
            out_ds.append(ds)
            out_len.append(lengths[i])
            continue
        group = [datasets[j] for j in members]
        merged = _merge(group) if len(group) > 1 else ds
        if len(group) > 1:
            report.merged.append([d.name for d in group])
            log.info(
                "source %r: merged %d small files (< data.small_threshold=%d lines) into %s: %d lines, batch "
                "size %s (%s)",
                source, len(group), small_threshold, merged.name, len(merged),
                merged.batch_size or "from the bucket table", ", ".join(d.name for d in group),
            )  # fmt: skip
        if len(merged) < drop_threshold:
            report.dropped.append(merged.name)
            report.dropped_lines += len(merged)
            log.warning(
                "source %r: dropped %s: %d lines < data.drop_threshold=%d (files: %s); it is not trained on",
                source, merged.name, len(merged), drop_threshold, ", ".join(d.name for d in group),
            )  # fmt: skip
            continue
        out_ds.append(merged)
        out_len.append(np.concatenate([lengths[j] for j in members]))
    if report.dropped:
        log.warning(
            "source %r: %d small set(s) dropped (%d lines): %s",
            source, len(report.dropped), report.dropped_lines, ", ".join(report.dropped),
        )  # fmt: skip
    return out_ds, out_len, report


def _symmetric(ds: TrainDataset) -> bool:
    return bool(ds.type and "symmetric" in ds.type)


def _merge(group: list[TrainDataset]) -> TrainDataset:
    """One dataset holding the lines of ``group`` (compatible files, see the module docstring) in order."""
    first = group[0]
    sizes = [d.batch_size for d in group if d.batch_size]
    types = {d.type for d in group}
    return replace(
        first,
        name=f"{first.path.parent.name}/merged({len(group)} files)",
        examples=[ex for d in group for ex in d.examples],
        batch_size=min(sizes) if sizes else None,
        type=first.type if len(types) == 1 else ("symmetric" if _symmetric(first) else None),
    )
