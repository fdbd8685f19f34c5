"""``DataOptions``: every ``data.*`` config key of :class:`~m3lit.data.datamodule.M3DataModule`, in one object.

Hydra instantiates ``M3DataModule.from_config(**data)`` (``configs/data/default.yaml``), which builds a
``DataOptions`` from the keys; Python callers may build one directly. A key of the ``data`` config is a
field here, except ``tokenizer`` (an object or a path), which the datamodule takes beside the options.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from m3lit.data.dataset import SamplingOptions
from m3lit.data.sampler import TABLE9_EDGES, TABLE9_FINETUNE
from m3lit.files.errors import UsageError

__all__ = ["SOURCES", "DataOptions"]

#: The two training sources, in the order they are read.
SOURCES = ("pairs", "labelled")


@dataclass
class DataOptions:
    """The options of a :class:`~m3lit.data.datamodule.M3DataModule`; each field is a ``data.*`` config key.

    Attributes:
        train_data: labelled source: a JSONL, parquet or Arrow file, a folder, a save_to_disk folder, an
            ``hf:ID[@REVISION][:CONFIG[:SPLIT]]`` Hub dataset, a mapping ``{path, no_in_batch_neg, columns,
            split, config, revision}`` or a list of them (:mod:`m3lit.data.entries`).
        pairs_data: optional stage-1 pairs source, same forms.
        columns: ``{field: column or [columns]}`` read for every dataset without its own ``columns``
            (:mod:`m3lit.data.columns`), or None.
        source: the active source at start (``"pairs"``/``"labelled"``); None: ``pairs`` when
            ``pairs_data`` is set, else ``labelled``.
        train_group_size: G of the labelled source (1 positive + G-1 negatives).
        pairs_group_size: G of the pairs source.
        query_max_len / passage_max_len: truncation lengths in tokens.
        pad_to_multiple_of: pad each sub-batch's length up to a multiple of this, or None.
        bucket_edges: ascending upper token-length edges of the buckets.
        bucket_batch_sizes: per-rank batch size per bucket (``len(bucket_edges) + 1``), labelled source.
        pairs_bucket_batch_sizes: the same for the pairs source (None: ``bucket_batch_sizes``).
        batch_size: one per-rank batch size for every bucket of both sources (replaces both tables).
        max_tokens_per_batch: token budget mode (see :func:`~m3lit.data.sampler.build_groups`), or None.
        drop_last: tail semantics of the sampler (see :mod:`m3lit.data.sampler`).
        small_threshold: merge a folder's files with fewer lines into one dataset (:mod:`m3lit.data.merge`);
            0: off.
        drop_threshold: drop a merged set with fewer lines; 0: off.
        shuffle: shuffle examples and steps each epoch.
        sub_batch_size: ``"auto"``, an int, or 0/None (see :mod:`m3lit.data.collate`).
        sub_batch_table: ``[[min_len, size], ...]`` for ``"auto"``, or None for the spec §4.5 table.
        use_teacher_scores: emit ``pos_scores``/``neg_scores`` as ``M3Batch.teacher_scores``.
        sort_negatives_by_teacher / shuffle_ratio / query_instruction: see
            :class:`~m3lit.data.dataset.SamplingOptions`.
        passage_instruction / instruction_format / use_prompt: the same.
        on_bad_line: ``"error"`` or ``"skip"`` (counted and reported).
        cache_dir: token-length cache folder (None: ``<cache root>/lengths``).
        seed: sampler seed (epoch e uses seed + e).
        rank / world_size: override what ``setup`` reads from the Trainer (tests, custom launchers).
    """

    train_data: Any = None
    pairs_data: Any = None
    columns: dict[str, Any] | None = None
    source: str | None = None
    train_group_size: int = 8
    pairs_group_size: int = 1
    query_max_len: int = 512
    passage_max_len: int = 8192
    pad_to_multiple_of: int | None = None
    bucket_edges: Sequence[int] = TABLE9_EDGES
    bucket_batch_sizes: Sequence[int] = TABLE9_FINETUNE
    pairs_bucket_batch_sizes: Sequence[int] | None = None
    batch_size: int | None = None
    max_tokens_per_batch: int | None = None
    drop_last: bool = True
    small_threshold: int = 0
    drop_threshold: int = 0
    shuffle: bool = True
    sub_batch_size: int | str | None = "auto"
    sub_batch_table: Sequence[Sequence[int]] | None = None
    use_teacher_scores: bool = True
    sort_negatives_by_teacher: bool = True
    shuffle_ratio: float = 0.0
    query_instruction: str | None = None
    passage_instruction: str | None = None
    instruction_format: str = "{}{}"
    use_prompt: bool = False
    on_bad_line: str = "error"
    cache_dir: str | None = None
    seed: int = 42
    rank: int | None = None
    world_size: int | None = None

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The config keys, in field order."""
        return tuple(f.name for f in fields(cls))

    def check_source(self) -> str | None:
        """``source``, checked: one of :data:`SOURCES` or None."""
        if self.source is not None and self.source not in SOURCES:
            raise UsageError(f"data.source must be one of {SOURCES} or null, got {self.source!r}")
        return self.source

    def used_sources(self, scheduled: Sequence[str | None] = ()) -> tuple[str, ...]:
        """The sources this run reads: those with data (``train_data``, ``pairs_data``), ``source`` and the
        ``scheduled`` ones (a stage schedule's); every source when none is known yet (a corpus fills the paths)."""
        paths = {"labelled": self.train_data, "pairs": self.pairs_data}
        used = {name for name, path in paths.items() if path not in (None, "", [])}
        used |= {name for name in (*scheduled, self.source) if name}
        return tuple(name for name in SOURCES if name in used) or SOURCES

    def check(self, scheduled: Sequence[str | None] = ()) -> None:
        """Check the values that need no data, before anything is built (:func:`m3lit.config.checks.validate`).

        Raises:
            UsageError: a negative threshold, ``drop_threshold`` without ``small_threshold`` (it drops
                merged sets only), a bad ``source`` or a batch table of a used source of the wrong length.
        """
        self.check_source()
        for key in ("small_threshold", "drop_threshold"):
            if int(getattr(self, key)) < 0:
                raise UsageError(f"data.{key} must be >= 0 (0: off), got {getattr(self, key)}")
        if self.drop_threshold and not self.small_threshold:
            raise UsageError(
                f"data.drop_threshold={self.drop_threshold} does nothing without data.small_threshold: it drops "
                "sets of merged small files; set data.small_threshold too (e.g. both 200) or leave drop_threshold 0"
            )
        self.batch_size_tables(self.used_sources(scheduled))

    def batch_size_tables(self, sources: Sequence[str] | None = None) -> dict[str, list[int]]:
        """Per-rank batch size per length bucket of each source (``batch_size`` fills both tables).

        Args:
            sources: the sources whose table is checked (None: :meth:`used_sources`); a table of a source
                the run does not read is returned unchecked.

        Raises:
            UsageError: ``batch_size`` < 1, or a checked table whose length is not ``len(bucket_edges) + 1``.
        """
        buckets = len(self.bucket_edges) + 1
        labelled, pairs = self.bucket_batch_sizes, self.pairs_bucket_batch_sizes
        if self.batch_size is not None:  # one size for every bucket of both sources
            if int(self.batch_size) < 1:
                raise UsageError(f"data.batch_size must be >= 1, got {self.batch_size}")
            labelled = pairs = [int(self.batch_size)] * buckets
        tables = {"labelled": [int(x) for x in labelled], "pairs": [int(x) for x in (pairs or labelled)]}
        keys = {
            "labelled": "bucket_batch_sizes",
            "pairs": "pairs_bucket_batch_sizes" if pairs else "bucket_batch_sizes",
        }
        for name in self.used_sources() if sources is None else sources:
            if len(tables[name]) != buckets:
                raise UsageError(
                    f"data.{keys[name]} (source {name!r}) needs len(data.bucket_edges) + 1 = {buckets} entries "
                    f"(one per length bucket), got {tables[name]}; for one size in every bucket set "
                    f"data.batch_size={tables[name][0]} instead"
                )
        return tables

    def collator_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~m3lit.data.collate.M3Collator` besides the tokenizer."""
        return {
            "query_max_len": int(self.query_max_len),
            "passage_max_len": int(self.passage_max_len),
            "pad_to_multiple_of": self.pad_to_multiple_of,
            "sub_batch_size": self.sub_batch_size,
            "sub_batch_table": self.sub_batch_table,
        }

    def sampling(self) -> SamplingOptions:
        """How an example becomes a query and its passage group (:func:`~m3lit.data.dataset.sample_group`)."""
        return SamplingOptions(
            shuffle_ratio=float(self.shuffle_ratio),
            sort_negatives_by_teacher=self.sort_negatives_by_teacher,
            query_instruction=self.query_instruction,
            passage_instruction=self.passage_instruction,
            instruction_format=self.instruction_format,
            use_prompt=self.use_prompt,
        )
