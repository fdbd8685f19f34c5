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
    dm = M3DataModule.from_config(**options)
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


# --- FlagEmbedding's own example folder layout (../shared/data/flagembedding-example-data, ten lines per file)
#: small_threshold=11 makes every file small; drop_threshold=15 keeps the merged pairs (20 lines) and drops
#: the files that have no partner (10 lines): a different group size, teacher-score use or folder.
REAL_MERGE = {"small_threshold": 11, "drop_threshold": 15}
REAL_KEPT = {
    "retrieval/merged(2 files)": ["retrieval/msmarco.jsonl", "retrieval/nq.jsonl"],  # G=8, scores
    "clustering-no_in_batch_neg/merged(2 files)": [
        "clustering-no_in_batch_neg/arXiv_title.jsonl",
        "clustering-no_in_batch_neg/bioRXiv_title.jsonl",
    ],
}
REAL_DROPPED = [  # nli: G=2; the two classification files: G=5 vs G=8; sts: alone in its folder
    "retrieval/nli.jsonl",
    "sts/sts.jsonl",
    "classification-no_in_batch_neg/AmazonClassification.jsonl",
    "classification-no_in_batch_neg/Banking77Classification.jsonl",
]


def _real_data():
    import test_data_real

    if not test_data_real.ROOT.is_dir():
        pytest.skip(f"FlagEmbedding example data not found at {test_data_real.ROOT} (../shared absent)")
    return test_data_real


@pytest.mark.shared_data
def test_flagembedding_example_layout_merges_and_reports_counts_and_names(tokenizer, tmp_path, caplog):
    real = _real_data()
    with caplog.at_level(logging.INFO, logger="m3lit.data"):
        dm = real._module(tokenizer, tmp_path, bucket_batch_sizes=[4], **REAL_MERGE)
        dm.setup("fit")
    datasets = dm.sources["labelled"].datasets
    assert [d.name for d in datasets] == list(REAL_KEPT)
    for ds, members in zip(datasets, REAL_KEPT.values(), strict=True):
        want = [(name, line) for name in members for line in real._lines(name)]  # file order, all lines
        assert [ex.query for ex in ds.examples] == [line["query"] for _, line in want]
        assert len(ds) == 20
    log = caplog.text
    for name, members in REAL_KEPT.items():
        assert f"merged 2 small files (< data.small_threshold=11 lines) into {name}: 20 lines" in log
        assert ", ".join(members) in log  # every member file named
    assert f"4 small set(s) dropped (40 lines): {', '.join(REAL_DROPPED)}" in log
    for name in REAL_DROPPED:
        assert f"dropped {name}: 10 lines < data.drop_threshold=15" in log
    # 20 retrieval lines in batches of 4, 20 clustering lines in batches of 2 (symmetric types halve)
    assert "source 'labelled': 2 file(s), 40 examples" in log and "15 steps per epoch" in log
    batches = list(dm.iter_batches())
    assert sorted({b.dataset for b in batches}) == sorted(REAL_KEPT)
    assert len(batches) == 15
    mixed = [b for b in batches if b.dataset == "retrieval/merged(2 files)"]
    files = [{i // 10 for i in b.meta["indices"]} for b in mixed]  # rows 0-9: msmarco, 10-19: nq
    assert any(len(f) == 2 for f in files)  # a merged batch mixes the two files
