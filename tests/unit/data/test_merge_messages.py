"""What the data warnings and errors advise (issue 30, item 6): the batch size of a never-full dataset, and
no advice to merge with small_threshold when the files were merged and then dropped."""

from __future__ import annotations

import logging

import pytest
from test_merge import _folder, _module

from m3lit.files.jsonl import DataError


def test_files_merged_then_dropped_say_so_and_advise_drop_threshold(tmp_path, tokenizer):
    folder, sizes = _folder(tmp_path)
    lines = sum(sizes.values())  # every file is below 100 lines: one merged set of all of them, dropped
    with pytest.raises(DataError) as error:
        _module(tmp_path, tokenizer, folder, small_threshold=100, drop_threshold=100)
    message = str(error.value)
    assert "every file was merged (data.small_threshold=100) and then dropped" in message, message
    assert (
        f"({lines} lines in 1 merged set(s) < data.drop_threshold=100); lower data.drop_threshold" in message
    )
    assert "merge small files" not in message


def test_a_never_full_dataset_warning_gives_its_batch_size(tmp_path, tokenizer, caplog):
    folder, sizes = _folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="m3lit.data.streams"):
        _module(
            tmp_path, tokenizer, folder
        )  # bucket_batch_sizes [4, 4]: small_a (3) and small_c (2) never fill one
    warned = [r.getMessage() for r in caplog.records if "yields no full batch" in r.getMessage()]
    assert len(warned) == 2, warned
    for name in ("small_a", "small_c"):
        line = next(w for w in warned if f"{name}.jsonl ({sizes[name + '.jsonl']} examples)" in w)
        assert "per-rank batch size 4 x world size 1" in line, line
