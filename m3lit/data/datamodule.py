"""``M3DataModule``: training data -> length-grouped, rank-sharded :class:`~m3lit.data.batch.M3Batch` steps.

Data: JSONL files or ``datasets`` tables (:mod:`m3lit.data.entries` lists the forms each data key takes).

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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from m3lit.data.batch import M3Batch
from m3lit.data.collate import M3Collator
from m3lit.data.dataset import sample_group
from m3lit.data.options import SOURCES, DataOptions
from m3lit.data.schema import SkipReport, check_on_bad_line
from m3lit.data.streams import SOURCE_KEYS, Source, build_source, load_datasets
from m3lit.files.cache import cache_root
from m3lit.files.jsonl import DataError

__all__ = ["DataOptions", "M3DataModule", "StepTicket"]

log = logging.getLogger(__name__)


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
    """Training data for m3lit: two named sources, length-grouped steps, exact resume (module docstring).

    Args:
        options: every ``data.*`` config key (:class:`~m3lit.data.options.DataOptions`); None: the defaults.
        tokenizer: tokenizer object or local path; None until set (``m3lit.train`` sets the model's) and
            required by :meth:`setup`.

    Hydra builds it with :meth:`from_config` from the keys of ``configs/data/*.yaml``.
    """

    def __init__(self, options: DataOptions | None = None, *, tokenizer: Any = None) -> None:
        super().__init__()
        options = options if options is not None else DataOptions()
        self.save_hyperparameters(asdict(options))
        self.options = options
        self.train_data, self.pairs_data = options.train_data, options.pairs_data
        self._initial_source = options.check_source()
        self.tokenizer = tokenizer
        self.group_sizes = {"labelled": int(options.train_group_size), "pairs": int(options.pairs_group_size)}
        self.bucket_edges = [int(x) for x in options.bucket_edges]
        self.bucket_batch_sizes = options.batch_size_tables()
        self.query_max_len, self.passage_max_len = int(options.query_max_len), int(options.passage_max_len)
        self.collator_options = options.collator_options()
        self.sampling = options.sampling()
        self.on_bad_line = check_on_bad_line(options.on_bad_line)
        self.seed = int(options.seed)
        self.skip_report = SkipReport()
        self.collator: M3Collator | None = None
        self._sources: dict[str, Source] = {}
        self._source: str | None = None
        self._outstanding = 0
        self._pending_state: dict | None = None

    @classmethod
    def from_config(cls, tokenizer: Any = None, **keys: Any) -> M3DataModule:
        """The datamodule of a ``data`` config: ``tokenizer`` plus the :class:`DataOptions` fields as keys.

        Hydra's ``_target_`` (``configs/data/default.yaml``); OmegaConf containers become plain data.
        ``M3DataModule.from_config.options_type`` is :class:`DataOptions`, for checkers of config keys.

        Raises:
            TypeError: a key that is not a :class:`DataOptions` field.
        """
        return cls(DataOptions(**{key: _plain(value) for key, value in keys.items()}), tokenizer=tokenizer)

    from_config.__func__.options_type = DataOptions  # the keys ``**keys`` takes (config/checks.py reads it)

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Read and validate every configured source, count tokens, build the samplers (idempotent)."""
        if self._sources:
            return
        self.tokenizer = self._load_tokenizer()
        self.collator = M3Collator(self.tokenizer, **self.collator_options)
        loaded = self._load_datasets()
        rank, world = self._rank_and_world()
        opts = self.options
        cache = Path(opts.cache_dir) if opts.cache_dir else cache_root() / "lengths"
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
                max_tokens_per_batch=opts.max_tokens_per_batch,
                rank=rank,
                world_size=world,
                seed=self.seed,
                drop_last=opts.drop_last,
                shuffle=opts.shuffle,
                small_threshold=int(opts.small_threshold),
                drop_threshold=int(opts.drop_threshold),
            )
        self._source = self._initial_source or ("pairs" if "pairs" in self._sources else "labelled")
        if self._source not in self._sources:
            raise ValueError(f"data.source={self._source!r} but no data is configured for it")
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self.load_state_dict(state)

    def _load_tokenizer(self) -> Any:
        """The tokenizer object (loaded from its folder when a path was given)."""
        if self.tokenizer is None:
            raise ValueError(
                "M3DataModule needs a tokenizer (pass tokenizer=..., set data.tokenizer, or let m3lit.train "
                "give it the model's)"
            )
        if isinstance(self.tokenizer, str | Path):
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(self.tokenizer))
        return self.tokenizer

    def _rank_and_world(self) -> tuple[int, int]:
        """This process's rank and the world size: the overrides, else the Trainer's, else (0, 1)."""
        trainer = getattr(self, "trainer", None)
        rank = self.options.rank
        world = self.options.world_size
        if rank is None:
            rank = trainer.global_rank if trainer is not None else 0
        if world is None:
            world = trainer.world_size if trainer is not None else 1
        return rank, world

    def _load_datasets(self) -> dict[str, list]:
        """Read and validate every file of every configured source, before any token counting."""
        configured = {"pairs": self.pairs_data, "labelled": self.train_data}
        if all(v is None for v in configured.values()):
            raise DataError("data.train_data is not set: give a JSONL file, a folder of them, or a list")
        loaded = {
            name: load_datasets(
                data,
                group_size=self.group_sizes[name],
                on_bad_line=self.on_bad_line,
                report=self.skip_report,
                use_teacher_scores=self.options.use_teacher_scores,
                key=f"data.{SOURCE_KEYS[name]}",
                columns=self.options.columns,
            )
            for name, data in configured.items()
            if data is not None
        }
        if self.skip_report.total:
            log.warning(self.skip_report.summary())
        return loaded

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
            raise ValueError(f"data source {name!r} is not configured (set data.{SOURCE_KEYS[name]})")
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
