"""Long documents (issue 14): a corpus mixing 100- and 8192-token passages is length-grouped and sub-batched.

* The length-grouped sampler and the collator keep short and long lines apart: no batch mixes them, a short
  line is padded to its own batch's longest passage (never to 8192), and the automatic sub-batch size of an
  8192-token batch is 1 (spec §4.5), so an 8192-token batch never holds more than one passage's activations.
* The stage-2 steps at 1k-8192 tokens (checkpointing and the gradient cache give the plain step's loss and
  gradients) are in tests/integration/test_model_long_steps.py.
"""

from __future__ import annotations

import json

import torch

from m3lit.data.collate import AUTO_SUB_BATCH_TABLE, auto_sub_batch_size
from m3lit.data.datamodule import M3DataModule
from m3lit.data.sampler import TABLE9_EDGES, assign_buckets

SHORT, LONG = 100, 8192


def _text_of(tokenizer, n_tokens: int, salt: int) -> str:
    """A text of exactly ``n_tokens`` tokens with special tokens, checked with the tokenizer itself."""
    words = [w for w in ("alpha", "beta", "gamma", "delta", "value", "object", "return", "string")]
    one = [w for w in words if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1]
    assert one, "the test tokenizer has no single-token word"
    text = " ".join(one[(i + salt) % len(one)] for i in range(n_tokens - 2))
    assert len(tokenizer(text)["input_ids"]) == n_tokens
    return text


def test_mixed_100_and_8192_token_corpus_is_length_grouped_and_sub_batched(tmp_path, tokenizer):
    rows = []
    for i in range(12):
        n = LONG + 50 if i % 3 == 0 else SHORT  # 4 long lines (truncated to 8192), 8 short ones
        rows.append(
            {
                "query": f"query {i}",
                "pos": [_text_of(tokenizer, n, i)],
                "neg": [_text_of(tokenizer, SHORT, i + 1)],
            }
        )
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    dm = M3DataModule.from_config(
        train_data=str(path), tokenizer=tokenizer, train_group_size=2, query_max_len=32, passage_max_len=LONG,
        bucket_batch_sizes=[4, 4, 4, 4, 4, 4, 4, 4, 2], cache_dir=str(tmp_path / "cache"), seed=3,
        pad_to_multiple_of=8,
    )  # fmt: skip
    dm.setup("fit")
    batches = list(dm.iter_batches())
    long_lines = {i for i in range(12) if i % 3 == 0}
    seen_long = seen_short = 0
    for batch in batches:
        kinds = {index in long_lines for index in batch.meta["indices"]}
        assert len(kinds) == 1, f"batch {batch.meta['indices']} mixes 100- and 8192-token lines"
        passages = batch.passages
        widths = [sub.input_ids.shape[1] for sub in passages]
        if kinds == {True}:
            seen_long += 1
            # 8192 tokens: one passage per sub-batch (auto table), each padded only to its own length
            assert all(len(sub) == 1 for sub in passages) and len(passages) == batch.num_passages
            assert max(widths) == LONG
            assert widths == [
                -(-int(sub.attention_mask.sum()) // 8) * 8 for sub in passages
            ]  # the short negatives: 104
        else:
            seen_short += 1
            # short lines stay at their own length: 100 tokens padded to a multiple of 8, not to 8192
            assert widths == [104] and len(passages[0]) == batch.num_passages
        assert int(sum(sub.input_ids.numel() for sub in passages)) <= batch.num_passages * LONG
    assert seen_long == 2 and seen_short == 2  # 4 long lines / batch 2, 8 short lines / batch 4
    # the buckets are the ones of the lines' longest passage (8192 -> the last Table 9 bucket)
    groups = dm.sources["labelled"].sampler.groups
    assert {g.bucket: len(g.indices) for g in groups} == {0: 8, len(TABLE9_EDGES): 4}
    assert assign_buckets(torch.tensor([SHORT, LONG]).numpy(), TABLE9_EDGES).tolist() == [0, 8]
    assert auto_sub_batch_size(LONG) == 1 and auto_sub_batch_size(SHORT) == 32
    # a configured table (data.sub_batch_table) is what auto uses
    custom = M3DataModule.from_config(
        train_data=str(path), tokenizer=tokenizer, train_group_size=2, query_max_len=32, passage_max_len=LONG,
        bucket_batch_sizes=[4] * 9, sub_batch_table=[[0, 3], [4096, 2]], cache_dir=str(tmp_path / "cache"), seed=3,
    )  # fmt: skip
    custom.setup("fit")
    for batch in custom.iter_batches():
        longest = max(sub.input_ids.shape[1] for sub in batch.passages)
        expected = 2 if longest >= 4096 else 3
        assert all(len(sub) <= expected for sub in batch.passages) and len(batch.passages[0]) == min(
            expected, batch.num_passages
        )
    assert AUTO_SUB_BATCH_TABLE[0] == (6000, 1)
