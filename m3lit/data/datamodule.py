"""``M3DataModule``: JSONL files -> length-grouped, rank-sharded :class:`~m3lit.data.batch.M3Batch` steps.

Sources. The module holds up to two named training sources: ``"labelled"`` (``train_data``, G =
``train_group_size``, default 8) and ``"pairs"`` (``pairs_data``, G = ``pairs_group_size``, default 1),
e.g. stage-1 pairs and stage-2 labelled data with hard negatives. Both are read and validated in
:meth:`setup`, so bad input in either stops the run before the first step. ``source`` picks the first
one (default: ``pairs`` when ``pairs_data`` is set, else ``labelled``).

Steps. Each source has its own :class:`~m3lit.data.sampler.LengthGroupedBatchSampler` (its own epoch
counter and position). The DataLoader (``batch_size=None``, no workers) only yields step tickets; the
batch of a ticket is built in :meth:`on_before_batch_transfer`, which Lightning calls once per step,
in the main process, right before the step's ``on_train_batch_start``. Hence:

* :meth:`set_source` called from any hook (``on_train_batch_start``/``on_train_batch_end`` of step k,
  ``on_validation_end`` ...) takes effect from the next batch built, i.e. step k + 1, even though the
  DataLoader iterator is live and has prefetched a ticket;
* :meth:`state_dict` holds exactly the consumed position of every source (Lightning's prefetching does
  not move it), so resuming from a checkpoint skips or repeats no example and restores the source.

The DataLoader's epoch ends when the active source's epoch ends; the next epoch reshuffles with
``seed + epoch``. Per-example randomness (which positive, which negatives, augmentation) is seeded by
(seed, source, epoch, dataset, example), so it is reproducible and rank-independent.

Outside a Trainer, :meth:`iter_batches` yields the built batches directly.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from m3lit.data.batch import M3Batch
from m3lit.data.collate import M3Collator
from m3lit.data.dataset import SamplingOptions, sample_group
from m3lit.data.sampler import TABLE9_EDGES, TABLE9_FINETUNE
from m3lit.data.schema import SkipReport, check_on_bad_line
from m3lit.data.streams import Source, build_source, load_datasets
from m3lit.files.cache import cache_root
from m3lit.files.errors import UsageError
from m3lit.files.jsonl import DataError

__all__ = ["M3DataModule", "StepTicket"]

log = logging.getLogger(__name__)
SOURCES = ("pairs", "labelled")
#: The config key of each source.
SOURCE_KEYS = {"pairs": "data.pairs_data", "labelled": "data.train_data"}


@dataclass(frozen=True)
class StepTicket:
    """Placeholder the DataLoader yields; :meth:`M3DataModule.on_before_batch_transfer` turns it into a batch."""

    def __getattr__(self, name: str):
        raise AttributeError(
            f"StepTicket has no attribute {name!r}: the batch of a step is built by M3DataModule.on_before_batch_transfer, "
            "so pass the datamodule to the trainer (trainer.fit(model, datamodule=dm)) rather than its dataloader, "
            "or use dm.iter_batches() outside a Trainer"
        )


class _StepStream(IterableDataset):
    """Yields one ticket per remaining step of the active source's epoch (tickets are built lazily)."""

    def __init__(self, datamodule: M3DataModule) -> None:
        self.datamodule = datamodule

    def __iter__(self) -> Iterator[StepTicket]:
        dm = self.datamodule
        dm._begin_epoch()
        while dm._active.sampler.remaining - dm._outstanding > 0:
            dm._outstanding += 1
            yield StepTicket()


class M3DataModule(L.LightningDataModule):
    """Training data for m3lit. Every argument is a ``data.*`` config key (see ``configs/data/*.yaml``).

    Args:
        train_data: labelled source: JSONL file, folder, ``{path, no_in_batch_neg}`` or a list of them.
        pairs_data: optional stage-1 pairs source, same forms.
        source: the active source at start (``"pairs"``/``"labelled"``); None picks as described above.
        tokenizer: tokenizer object or local path; None with ``demo`` uses the demo tokenizer.
        demo: fill unset ``train_data``/``pairs_data``/``tokenizer`` from the offline demo corpus.
        demo_dir: where the demo corpus lives (None: the default cache folder).
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
        rank / world_size: override what :meth:`setup` reads from the Trainer (tests, custom launchers).
    """

    def __init__(
        self,
        train_data: Any = None,
        pairs_data: Any = None,
        source: str | None = None,
        *,
        tokenizer: Any = None,
        demo: bool = False,
        demo_dir: str | None = None,
        train_group_size: int = 8,
        pairs_group_size: int = 1,
        query_max_len: int = 512,
        passage_max_len: int = 8192,
        pad_to_multiple_of: int | None = None,
        bucket_edges: Sequence[int] = TABLE9_EDGES,
        bucket_batch_sizes: Sequence[int] = TABLE9_FINETUNE,
        pairs_bucket_batch_sizes: Sequence[int] | None = None,
        batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        drop_last: bool = True,
        small_threshold: int = 0,
        drop_threshold: int = 0,
        shuffle: bool = True,
        sub_batch_size: int | str | None = "auto",
        sub_batch_table: Sequence[Sequence[int]] | None = None,
        use_teacher_scores: bool = True,
        sort_negatives_by_teacher: bool = True,
        shuffle_ratio: float = 0.0,
        query_instruction: str | None = None,
        passage_instruction: str | None = None,
        instruction_format: str = "{}{}",
        use_prompt: bool = False,
        on_bad_line: str = "error",
        cache_dir: str | None = None,
        seed: int = 42,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer"])
        self.train_data, self.pairs_data = _plain(train_data), _plain(pairs_data)
        if source is not None and source not in SOURCES:
            raise UsageError(f"data.source must be one of {SOURCES} or null, got {source!r}")
        self._initial_source = source
        self.tokenizer = tokenizer
        self.demo, self.demo_dir = demo, demo_dir
        self.group_sizes = {"labelled": int(train_group_size), "pairs": int(pairs_group_size)}
        self.bucket_edges = [int(x) for x in bucket_edges]
        if batch_size is not None:  # one size for every bucket of both sources
            if int(batch_size) < 1:
                raise UsageError(f"data.batch_size must be >= 1, got {batch_size}")
            bucket_batch_sizes = pairs_bucket_batch_sizes = [int(batch_size)] * (len(self.bucket_edges) + 1)
        self.bucket_batch_sizes = {
            "labelled": [int(x) for x in bucket_batch_sizes],
            "pairs": [int(x) for x in (pairs_bucket_batch_sizes or bucket_batch_sizes)],
        }
        for name, key in (("labelled", "bucket_batch_sizes"), ("pairs", "pairs_bucket_batch_sizes")):
            if len(self.bucket_batch_sizes[name]) != len(self.bucket_edges) + 1:
                raise UsageError(
                    f"data.{key} needs len(data.bucket_edges) + 1 = {len(self.bucket_edges) + 1} entries (one per "
                    f"length bucket), got {self.bucket_batch_sizes[name]}; for one size in every bucket set "
                    f"data.batch_size={self.bucket_batch_sizes[name][0]} instead"
                )
        self.query_max_len, self.passage_max_len = int(query_max_len), int(passage_max_len)
        self.max_tokens_per_batch = max_tokens_per_batch
        self.drop_last, self.shuffle = drop_last, shuffle
        self.small_threshold, self.drop_threshold = int(small_threshold), int(drop_threshold)
        self.collator_options = {
            "query_max_len": self.query_max_len,
            "passage_max_len": self.passage_max_len,
            "pad_to_multiple_of": pad_to_multiple_of,
            "sub_batch_size": sub_batch_size,
            "sub_batch_table": _plain(sub_batch_table),
        }
        self.use_teacher_scores = use_teacher_scores
        self.sampling = SamplingOptions(
            shuffle_ratio=float(shuffle_ratio),
            sort_negatives_by_teacher=sort_negatives_by_teacher,
            query_instruction=query_instruction,
            passage_instruction=passage_instruction,
            instruction_format=instruction_format,
            use_prompt=use_prompt,
        )
        self.on_bad_line = check_on_bad_line(on_bad_line)
        self.cache_dir = cache_dir
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.skip_report = SkipReport()
        self.collator: M3Collator | None = None
        self._sources: dict[str, Source] = {}
        self._source: str | None = None
        self._outstanding = 0
        self._pending_state: dict | None = None
        self._demo_paths = None

    # ------------------------------------------------------------------ demo
    @property
    def demo_paths(self):
        """The offline demo corpus (:class:`~m3lit.corpora.demo.build.DemoPaths`), built on first access."""
        if self._demo_paths is None:
            from m3lit.corpora.demo.build import build_demo

            self._demo_paths = build_demo(self.demo_dir)
        return self._demo_paths

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Read and validate every configured source, count tokens, build the samplers (idempotent)."""
        if self._sources:
            return
        if self.demo:
            paths = self.demo_paths
            self.train_data = self.train_data if self.train_data is not None else str(paths.train)
            self.pairs_data = self.pairs_data if self.pairs_data is not None else str(paths.pairs)
            self.tokenizer = self.tokenizer if self.tokenizer is not None else str(paths.tokenizer_dir)
        if self.tokenizer is None:
            raise ValueError("M3DataModule needs a tokenizer (pass tokenizer=..., or set data.demo=true)")
        if isinstance(self.tokenizer, str | Path):
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer))
        trainer = getattr(self, "trainer", None)
        rank = self.rank if self.rank is not None else (trainer.global_rank if trainer is not None else 0)
        world = (
            self.world_size
            if self.world_size is not None
            else (trainer.world_size if trainer is not None else 1)
        )
        self.collator = M3Collator(self.tokenizer, **self.collator_options)
        configured = {"pairs": self.pairs_data, "labelled": self.train_data}
        if all(v is None for v in configured.values()):
            raise DataError("data.train_data is not set: give a JSONL file, a folder of them, or a list")
        loaded = {
            name: load_datasets(
                data,
                group_size=self.group_sizes[name],
                on_bad_line=self.on_bad_line,
                report=self.skip_report,
                use_teacher_scores=self.use_teacher_scores,
                key=SOURCE_KEYS[name],
            )
            for name, data in configured.items()
            if data is not None
        }  # every file of every source is validated before anything else
        if self.skip_report.total:
            log.warning(self.skip_report.summary())
        cache = Path(self.cache_dir) if self.cache_dir else cache_root() / "lengths"
        for name, datasets in loaded.items():
            self._sources[name] = build_source(
                name,
                datasets,
                tokenizer=self.tokenizer,
                query_max_len=self.query_max_len,
                passage_max_len=self.passage_max_len,
                cache_dir=cache,
                edges=self.bucket_edges,
                batch_sizes=self.bucket_batch_sizes[name],
                max_tokens_per_batch=self.max_tokens_per_batch,
                rank=rank,
                world_size=world,
                seed=self.seed,
                drop_last=self.drop_last,
                shuffle=self.shuffle,
                small_threshold=self.small_threshold,
                drop_threshold=self.drop_threshold,
            )
        self._source = self._initial_source or ("pairs" if "pairs" in self._sources else "labelled")
        if self._source not in self._sources:
            raise ValueError(f"data.source={self._source!r} but no data is configured for it")
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self.load_state_dict(state)

    # ------------------------------------------------------------------ sources
    @property
    def source(self) -> str | None:
        """Name of the active training source."""
        return self._source

    @property
    def sources(self) -> dict[str, Source]:
        return self._sources

    @property
    def _active(self) -> Source:
        if not self._sources:
            raise RuntimeError("M3DataModule.setup() has not run")
        return self._sources[self._source]

    def set_source(self, name: str) -> None:
        """Switch the training source from the next batch built on (see the module docstring)."""
        if name not in SOURCES:
            raise ValueError(f"unknown data source {name!r}; expected one of {SOURCES}")
        if self._sources and name not in self._sources:
            raise ValueError(f"data source {name!r} is not configured (set {SOURCE_KEYS[name]})")
        if name != self._source:
            log.info("data source: %s -> %s", self._source, name)
        if self._sources:
            self._source = name
        else:
            self._initial_source = name

    # ------------------------------------------------------------------ batches
    def next_batch(self) -> M3Batch:
        """Build the batch of the active source's next step on this rank and advance its position."""
        src = self._active
        self._outstanding = max(0, self._outstanding - 1)
        step = src.sampler.next_batch()
        ds = src.datasets[step.dataset]
        queries, passages, scores = [], [], []
        for index in step.indices.tolist():
            rng = random.Random(f"{self.seed}/{src.name}/{step.epoch}/{step.dataset}/{index}")
            query, group, teacher = sample_group(
                ds.examples[index], ds.group_size, rng, self.sampling, ds.has_scores
            )
            queries.append(query)
            passages.extend(group)
            scores.append(teacher)
        meta = {
            "source": src.name,
            "epoch": step.epoch,
            "step": step.step,
            "rank": src.sampler.rank,
            "dataset_index": step.dataset,
            "indices": step.indices.tolist(),  # example indices (file order) inside the dataset
            "type": ds.type,
        }
        return self.collator(
            queries,
            passages,
            ds.group_size,
            scores if ds.has_scores else None,
            no_in_batch_neg=ds.no_in_batch_neg,
            dataset=ds.name,
            meta=meta,
        )

    def iter_batches(self, steps: int | None = None) -> Iterator[M3Batch]:
        """Without a Trainer: the rest of the active source's epoch (or ``steps`` batches, across epochs)."""
        self._begin_epoch()
        count = 0
        while (steps is None and self._active.sampler.remaining > 0) or (steps is not None and count < steps):
            yield self.next_batch()
            count += 1

    def _begin_epoch(self) -> None:
        self._outstanding = 0
        if self._active.sampler.remaining <= 0:
            self._active.sampler.start_next_epoch()

    def train_dataloader(self) -> DataLoader:
        """Tickets, one per step; batches are built in :meth:`on_before_batch_transfer`."""
        if not self._sources:
            self.setup("fit")
        return DataLoader(_StepStream(self), batch_size=None, num_workers=0)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Build the step's batch from its ticket (other batches, e.g. validation ones, pass unchanged)."""
        return self.next_batch() if isinstance(batch, StepTicket) else batch

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """The active source and every source's consumed position."""
        if not self._sources:
            return dict(self._pending_state or {})
        return {
            "source": self._source,
            "samplers": {n: s.sampler.state_dict() for n, s in self._sources.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore source and positions (deferred to :meth:`setup` when called before it)."""
        if not state_dict:
            return
        if not self._sources:
            self._pending_state = dict(state_dict)
            return
        for name, sampler_state in state_dict["samplers"].items():
            if name not in self._sources:
                raise ValueError(f"checkpoint has data source {name!r}, which this run does not configure")
            self._sources[name].sampler.load_state_dict(sampler_state)
        self._source = state_dict["source"]
        self._outstanding = 0


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python (Hydra passes ListConfig/DictConfig)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover
        return value
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value
