"""``M3Collator``: texts of one rank's batch -> an :class:`~m3lit.data.batch.M3Batch` of padded sub-batches.

Queries and passages are tokenised with their own max lengths (truncation, special tokens added) and
split into sub-batches that are each padded only to their own longest sequence (optionally rounded up
to ``pad_to_multiple_of``), the paper's split-batch (App. B.3). Concatenating the sub-batches' rows
(after right-padding them to a common length) gives exactly the one padded batch.

The sub-batch size is either fixed (``sub_batch_size: int``), off (``0``/``None``: one sub-batch), or
``"auto"``: chosen from the padded length L of the whole query (resp. passage) batch by the table of
spec §4.5 (FlagEmbedding RES ``compute_sub_batch_size``), or by ``sub_batch_table`` from config.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from m3lit.data.batch import Encoded, M3Batch
from m3lit.files.errors import UsageError

__all__ = ["AUTO_SUB_BATCH_TABLE", "M3Collator", "auto_sub_batch_size", "pad_ids"]

#: (minimum padded length, sub-batch size), longest first: L >= 6000 -> 1, ..., L < 512 -> 32 (spec §4.5).
AUTO_SUB_BATCH_TABLE = ((6000, 1), (5000, 2), (4000, 3), (3000, 3), (2000, 5), (1000, 9), (512, 16), (0, 32))


def auto_sub_batch_size(length: int, table: Sequence[Sequence[int]] = AUTO_SUB_BATCH_TABLE) -> int:
    """Sub-batch size for a padded length ``length`` from ``(min_length, size)`` rows.

    >>> [auto_sub_batch_size(n) for n in (8192, 5000, 4096, 3000, 2048, 1024, 512, 511)]
    [1, 2, 3, 3, 5, 9, 16, 32]
    """
    for min_length, size in sorted(table, key=lambda row: -row[0]):
        if length >= min_length:
            return int(size)
    raise ValueError(f"sub_batch_table {table!r} has no row for length {length}; add a (0, size) row")


def pad_ids(ids: Sequence[Sequence[int]], pad_id: int, multiple: int | None = None) -> Encoded:
    """Right-pad token-id lists to their longest (rounded up to ``multiple``): (b, L) ids and mask.

    >>> enc = pad_ids([[0, 5, 2], [0, 2]], pad_id=1, multiple=4)
    >>> enc.input_ids.tolist(), enc.attention_mask.tolist()
    ([[0, 5, 2, 1], [0, 2, 1, 1]], [[1, 1, 1, 0], [1, 1, 0, 0]])
    """
    longest = max(len(x) for x in ids)
    if multiple:
        longest = -(-longest // multiple) * multiple
    input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), longest), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return Encoded(input_ids, mask)


class M3Collator:
    """Tokenise and sub-batch one rank's batch.

    Args:
        tokenizer: a Hugging Face tokenizer (its ``pad_token_id`` pads).
        query_max_len: query truncation (real recipe 512).
        passage_max_len: passage truncation (real recipe 8192).
        pad_to_multiple_of: round each sub-batch's padded length up to this multiple (e.g. 8), or None.
        sub_batch_size: ``"auto"`` (spec §4.5 table), a fixed int, or 0/None for no split.
        sub_batch_table: ``(min_length, size)`` rows replacing the spec table in ``"auto"`` mode.
    """

    def __init__(
        self,
        tokenizer,
        *,
        query_max_len: int = 512,
        passage_max_len: int = 8192,
        pad_to_multiple_of: int | None = None,
        sub_batch_size: int | str | None = "auto",
        sub_batch_table: Sequence[Sequence[int]] | None = None,
    ) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token")
        if isinstance(sub_batch_size, str) and sub_batch_size != "auto":
            raise UsageError(f"data.sub_batch_size must be 'auto', an int or null, got {sub_batch_size!r}")
        if isinstance(sub_batch_size, int) and sub_batch_size < 0:
            raise UsageError(f"data.sub_batch_size must be >= 0, got {sub_batch_size}")
        self.tokenizer = tokenizer
        self.query_max_len = query_max_len
        self.passage_max_len = passage_max_len
        self.pad_to_multiple_of = pad_to_multiple_of
        self.sub_batch_size = sub_batch_size
        self.sub_batch_table = (
            tuple(tuple(r) for r in sub_batch_table) if sub_batch_table else AUTO_SUB_BATCH_TABLE
        )

    def __call__(
        self,
        queries: Sequence[str],
        passages: Sequence[str],
        group_size: int,
        teacher_scores: Sequence[Sequence[float]] | None = None,
        *,
        no_in_batch_neg: bool = False,
        dataset: str = "",
        meta: dict | None = None,
    ) -> M3Batch:
        """Build the batch.

        Args:
            queries: B query texts.
            passages: B*G passage texts laid out [pos, neg_1..neg_{G-1}] per query.
            group_size: G.
            teacher_scores: B rows of G floats aligned with ``passages``, or None.
            no_in_batch_neg: passed through to the batch.
            dataset: dataset name for logging.
            meta: extra information (source, epoch, step ...).
        """
        if len(passages) != len(queries) * group_size:
            raise ValueError(
                f"{len(passages)} passages for {len(queries)} queries and group size {group_size}"
            )
        scores = None
        if teacher_scores is not None:
            scores = torch.tensor(teacher_scores, dtype=torch.float32)  # never integer (FlagEmbedding #1471)
            if scores.shape != (len(queries), group_size):
                raise ValueError(
                    f"teacher scores {tuple(scores.shape)} != (B, G) = ({len(queries)}, {group_size})"
                )
        return M3Batch(
            queries=self.encode(queries, self.query_max_len),
            passages=self.encode(passages, self.passage_max_len),
            group_size=group_size,
            teacher_scores=scores,
            no_in_batch_neg=no_in_batch_neg,
            dataset=dataset,
            meta=dict(meta or {}),
        )

    def encode(self, texts: Sequence[str], max_length: int) -> list[Encoded]:
        """Tokenise ``texts`` and return sub-batches, each padded to its own length."""
        ids = self.tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length)[
            "input_ids"
        ]
        size = self.sub_batch_size_for(ids)
        return [
            pad_ids(ids[i : i + size], self.tokenizer.pad_token_id, self.pad_to_multiple_of)
            for i in range(0, len(ids), size)
        ]

    def sub_batch_size_for(self, ids: Sequence[Sequence[int]]) -> int:
        """Rows per sub-batch for these sequences (all of them when splitting is off)."""
        if not self.sub_batch_size:
            return max(1, len(ids))
        if self.sub_batch_size == "auto":
            longest = max(len(x) for x in ids)
            if self.pad_to_multiple_of:
                longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
            return auto_sub_batch_size(longest, self.sub_batch_table)
        return int(self.sub_batch_size)
