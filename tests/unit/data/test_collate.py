"""M3Collator: separately padded sub-batches that concatenate back to one padded batch."""

from __future__ import annotations

import pytest
import torch

from m3lit.data.collate import AUTO_SUB_BATCH_TABLE, M3Collator, auto_sub_batch_size


def _concat(subs, pad_id):
    """Right-pad every sub-batch to the longest and stack the rows (the naive reference)."""
    width = max(s.input_ids.shape[1] for s in subs)
    ids = torch.cat(
        [torch.nn.functional.pad(s.input_ids, (0, width - s.input_ids.shape[1]), value=pad_id) for s in subs]
    )
    mask = torch.cat(
        [torch.nn.functional.pad(s.attention_mask, (0, width - s.attention_mask.shape[1])) for s in subs]
    )
    return ids, mask


@pytest.mark.parametrize("sub_batch_size", [1, 3, 5, 0, "auto"])
def test_sub_batches_concatenate_to_one_padded_batch(tokenizer, texts, sub_batch_size):
    collator = M3Collator(tokenizer, query_max_len=20, passage_max_len=40, sub_batch_size=sub_batch_size)
    mixed = [t[: 8 + 9 * ((5 * i) % 12)] for i, t in enumerate(texts[:12])]  # lengths vary around the caps
    queries, passages = mixed[:4], mixed
    batch = collator(queries, passages, group_size=3)
    for subs, items, max_len in ((batch.queries, queries, 20), (batch.passages, passages, 40)):
        reference = tokenizer(
            list(items), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        ids, mask = _concat(subs, tokenizer.pad_token_id)
        assert torch.equal(ids, reference["input_ids"])
        assert torch.equal(mask, reference["attention_mask"])
        assert len(set(mask.sum(1).tolist())) > 2  # the lengths really differ
        expected = {1: 1, 3: 3, 5: 5, 0: len(items), "auto": 32}[sub_batch_size]
        assert [len(s) for s in subs][:-1] == [expected] * (len(subs) - 1)
        for sub in subs:  # each sub-batch padded only to its own longest row
            assert sub.attention_mask[:, -1].any()
            assert torch.equal(
                sub.input_ids[sub.attention_mask == 0],
                torch.full_like(sub.input_ids[sub.attention_mask == 0], tokenizer.pad_token_id),
            )
    assert batch.num_queries == 4 and batch.num_passages == 12 and batch.group_size == 3
    assert batch.teacher_scores is None


def test_pad_to_multiple_of_rounds_each_sub_batch(tokenizer, texts):
    collator = M3Collator(
        tokenizer, query_max_len=30, passage_max_len=30, sub_batch_size=2, pad_to_multiple_of=8
    )
    batch = collator(texts[:4], texts[:4], group_size=1)
    for sub in batch.queries:
        real = int(sub.attention_mask.sum(1).max())
        assert sub.input_ids.shape[1] == -(-real // 8) * 8  # smallest multiple of 8 that fits


def test_separate_max_lengths_and_teacher_scores(tokenizer, texts):
    collator = M3Collator(tokenizer, query_max_len=6, passage_max_len=11, sub_batch_size=0)
    batch = collator(
        texts[:2], texts[:4], group_size=2, teacher_scores=[[9, 7], [5, 3]], no_in_batch_neg=True, dataset="d"
    )
    assert batch.queries[0].input_ids.shape[1] == 6 and batch.passages[0].input_ids.shape[1] == 11
    assert batch.teacher_scores.dtype == torch.float32  # integer scores become float (FlagEmbedding #1471)
    assert batch.teacher_scores.tolist() == [[9.0, 7.0], [5.0, 3.0]]
    assert batch.no_in_batch_neg and batch.dataset == "d"
    with pytest.raises(ValueError, match="teacher scores"):
        collator(texts[:2], texts[:4], group_size=2, teacher_scores=[[1.0], [2.0]])
    with pytest.raises(ValueError, match="passages for 2 queries"):
        collator(texts[:2], texts[:3], group_size=2)


def test_auto_sub_batch_size_follows_the_padded_length(tokenizer, texts):
    # the spec 4.5 table, row by row, at and just below each threshold
    for min_len, size in AUTO_SUB_BATCH_TABLE:
        assert auto_sub_batch_size(min_len) == size
        if min_len:
            below = [s for m, s in AUTO_SUB_BATCH_TABLE if m <= min_len - 1][0]
            assert auto_sub_batch_size(min_len - 1) == below
    # a configured table: short sequences -> 4 per sub-batch, padded length >= 12 -> 2
    collator = M3Collator(tokenizer, query_max_len=40, passage_max_len=40, sub_batch_table=[[0, 4], [12, 2]])
    long_batch = collator.encode(texts[:6], 40)
    short_batch = collator.encode(["a b", "c", "d e", "f", "g", "h"], 40)
    assert max(int(s.attention_mask.sum(1).max()) for s in long_batch) >= 12
    assert [len(s) for s in long_batch] == [2, 2, 2]
    assert [len(s) for s in short_batch] == [4, 2]
    with pytest.raises(ValueError, match="sub_batch_size"):
        M3Collator(tokenizer, sub_batch_size="big")
