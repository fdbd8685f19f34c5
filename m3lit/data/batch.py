"""The batch contract between the data pipeline and the training system.

The collator (:mod:`m3lit.data.collate`) emits one :class:`M3Batch` per rank and step; the
LightningModule consumes it. Queries and passages come as lists of sub-batches, each padded to its own
length (paper App. B.3 split-batch); concatenating the sub-batches' rows gives the full batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Encoded", "M3Batch"]


@dataclass
class Encoded:
    """One padded sub-batch of token ids: ``input_ids`` and ``attention_mask`` are (b, L)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def to(self, device: torch.device | str) -> Encoded:
        return Encoded(self.input_ids.to(device), self.attention_mask.to(device))

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class M3Batch:
    """One training step's data on one rank.

    Attributes:
        queries: sub-batches covering B queries in order.
        passages: sub-batches covering B*G passages laid out [pos, neg_1..neg_{G-1}] per query.
        group_size: G (1 positive + G-1 negatives per query).
        teacher_scores: (B, G) float teacher scores aligned with the passages, or None.
        no_in_batch_neg: True for datasets whose loss only scores a query against its own group (spec §3.1).
        dataset: name of the dataset (file) the batch was drawn from, for logging.
    """

    queries: list[Encoded]
    passages: list[Encoded]
    group_size: int
    teacher_scores: torch.Tensor | None = None
    no_in_batch_neg: bool = False
    dataset: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def num_queries(self) -> int:
        return sum(len(sub) for sub in self.queries)

    @property
    def num_passages(self) -> int:
        return sum(len(sub) for sub in self.passages)

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens of the queries and passages: what the throughput figures count."""
        return int(sum(int(sub.attention_mask.sum()) for sub in (*self.queries, *self.passages)))

    def to(self, device: torch.device | str) -> M3Batch:
        """Move every tensor to ``device`` (Lightning calls this through ``transfer_batch_to_device``)."""
        return M3Batch(
            queries=[sub.to(device) for sub in self.queries],
            passages=[sub.to(device) for sub in self.passages],
            group_size=self.group_size,
            teacher_scores=None if self.teacher_scores is None else self.teacher_scores.to(device),
            no_in_batch_neg=self.no_in_batch_neg,
            dataset=self.dataset,
            meta=self.meta,
        )
