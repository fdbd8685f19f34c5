"""Small-dataset merging (spec §4.3): files below data.small_threshold in one folder share one dataset."""

from __future__ import annotations

import logging

import pytest
from test_data_datamodule import _rows, _write

from m3lit.data.datamodule import M3DataModule


def _folder(tmp_path):
    """A FlagEmbedding-style example folder: one large file and several small ones (sizes in names)."""
    folder = tmp_path / "example_data" / "retrieval"
    sizes = {"big.jsonl": 24, "small_a.jsonl": 3, "small_b.jsonl": 4, "small_c.jsonl": 2}
    for name, n in sizes.items():
        rows = _rows(n, name.split(".")[0])
        if name == "small_b.jsonl":
            for row in rows:
                row["batch_size"] = 2  # a file batch-size column: the merged set takes the smallest
        _write(folder / name, rows)
    return folder, sizes


def _module(tmp_path, tokenizer, folder, **kw) -> M3DataModule:
    options = {
        "train_data": str(folder),
        "tokenizer": tokenizer,
        "train_group_size": 2,
        "query_max_len": 16,
        "passage_max_len": 64,
        "bucket_edges": [1000],  # one bucket: batch sizes come from the table alone
        "bucket_batch_sizes": [4, 4],
        "cache_dir": str(tmp_path / "cache"),
        "seed": 3,
        **kw,
    }
    dm = M3DataModule(**options)
    dm.setup("fit")
    return dm


def _epoch(dm):
    return [(b.dataset, b.meta["indices"], b.queries[0].input_ids.tolist()) for b in dm.iter_batches()]


def test_small_files_are_merged_with_the_smallest_batch_size(tmp_path, tokenizer, caplog):
    folder, sizes = _folder(tmp_path)
    with caplog.at_level(logging.INFO, logger="m3lit.data.merge"):
        dm = _module(tmp_path, tokenizer, folder, small_threshold=5)
    datasets = dm.sources["labelled"].datasets
    assert [d.name for d in datasets] == ["retrieval/big.jsonl", "retrieval/merged(3 files)"]
    merged = datasets[1]
    assert len(merged) == sizes["small_a.jsonl"] + sizes["small_b.jsonl"] + sizes["small_c.jsonl"]
    assert [ex.query.split(" query")[0] for ex in merged.examples] == ["small_a"] * 3 + ["small_b"] * 4 + [
        "small_c"
    ] * 2  # file order
    assert merged.batch_size == 2  # min of the columns (small_b's 2; the others have none)
    assert "merged 3 small files" in caplog.text and "small_c.jsonl" in caplog.text
    # the merged set's batches mix lines of several files, each of batch size 2 (9 lines -> 4 batches)
    batches = [b for b in dm.iter_batches() if b.dataset == merged.name]
    assert [b.num_queries for b in batches] == [2] * 4
    files = [{merged.examples[i].query.split(" query")[0] for i in b.meta["indices"]} for b in batches]
    assert any(len(f) > 1 for f in files)
    seen = sorted(i for b in batches for i in b.meta["indices"])
    assert len(seen) == 8 and len(set(seen)) == 8  # one line dropped (odd tail), none twice


def test_without_threshold_small_files_are_not_trained(tmp_path, tokenizer):
    folder, _ = _folder(tmp_path)
    dm = _module(tmp_path, tokenizer, folder)  # defaults: 0 = off (the previous behaviour)
    assert len(dm.sources["labelled"].datasets) == 4
    trained = {b.dataset for b in dm.iter_batches()}
    assert trained == {"retrieval/big.jsonl", "retrieval/small_b.jsonl"}  # small_b has batch_size 2


def test_drop_threshold_drops_the_merged_set_and_says_so(tmp_path, tokenizer, caplog):
    folder, _ = _folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="m3lit.data.merge"):
        dm = _module(tmp_path, tokenizer, folder, small_threshold=5, drop_threshold=10)
    assert [d.name for d in dm.sources["labelled"].datasets] == ["retrieval/big.jsonl"]
    assert "dropped retrieval/merged(3 files): 9 lines < data.drop_threshold=10" in caplog.text
    assert "1 small set(s) dropped (9 lines)" in caplog.text
    kept = _module(tmp_path, tokenizer, folder, small_threshold=5, drop_threshold=9)  # 9 lines: not < 9
    assert len(kept.sources["labelled"].datasets) == 2


def test_merge_is_deterministic_and_only_mixes_compatible_files(tmp_path, tokenizer):
    folder, _ = _folder(tmp_path)
    _write(folder / "small_scored.jsonl", _rows(3, "scored", scores=True))  # teacher scores: its own set
    first = _module(tmp_path, tokenizer, folder, small_threshold=5)
    again = _module(tmp_path, tokenizer, folder, small_threshold=5)
    epoch = _epoch(first)
    assert epoch == _epoch(again)  # same files, same shared seed -> same batches, same bytes
    names = [d.name for d in first.sources["labelled"].datasets]
    assert names == ["retrieval/big.jsonl", "retrieval/merged(3 files)", "retrieval/small_scored.jsonl"]
    other = _module(tmp_path, tokenizer, folder, small_threshold=5, seed=4)
    assert _epoch(other) != epoch
    with pytest.raises(ValueError, match="small_threshold and data.drop_threshold must be >= 0"):
        _module(tmp_path, tokenizer, folder, small_threshold=-1)
