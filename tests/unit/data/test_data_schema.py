"""Bad training input: every case stops with file + line + field, or is skipped and counted when asked."""

from __future__ import annotations

import json
import logging

import pytest

from m3lit.data.datamodule import M3DataModule
from m3lit.data.dataset import load_dataset
from m3lit.data.entries import expand_train_data
from m3lit.data.schema import SkipReport, read_jsonl
from m3lit.files.jsonl import DataError

GOOD = {"query": "what is x", "pos": ["x is a letter"], "neg": ["y is another", "z too"]}


def _write(path, rows):
    path.write_bytes(
        b"".join(
            (r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode()) + b"\n"
            for r in rows
        )
    )
    return path


BAD_LINES = [
    ('{"query": "q", "pos": ["p"]', "malformed JSON", None),
    ('["query", "pos"]', "expected a JSON object", None),
    ({"pos": ["p"]}, "missing", "query"),
    ({"query": "   ", "pos": ["p"]}, "empty", "query"),
    ({"query": 3, "pos": ["p"]}, "must be a string", "query"),
    ({"query": "q"}, "missing", "pos"),
    ({"query": "q", "pos": []}, "empty list", "pos"),
    ({"query": "q", "pos": "p"}, "must be a list", "pos"),
    ({"query": "q", "pos": ["p", 5]}, "must be a string", "pos[1]"),
    ({"query": "q", "pos": [""]}, "empty passage", "pos[0]"),
    ({"query": "q", "pos": ["p"], "neg": "n"}, "must be a list", "neg"),
    ({"query": "q", "pos": ["p"], "neg": ["n", None]}, "must be a string", "neg[1]"),
    (
        {"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0, 2.0], "neg_scores": [0.5]},
        "must align",
        "pos_scores",
    ),
    (
        {"query": "q", "pos": ["p"], "neg": ["n", "m"], "pos_scores": [1.0], "neg_scores": [0.5]},
        "must align",
        "neg_scores",
    ),
    (
        {"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0]},
        "missing while 'pos_scores'",
        "neg_scores",
    ),
    (
        {"query": "q", "pos": ["p"], "neg": ["n"], "neg_scores": [1.0]},
        "missing while 'neg_scores'",
        "pos_scores",
    ),
    (
        {"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": ["high"], "neg_scores": [0.1]},
        "finite number",
        "pos_scores[0]",
    ),
    (
        {"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [True], "neg_scores": [0.1]},
        "finite number",
        "pos_scores[0]",
    ),
    (
        {"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1.0], "neg_scores": "0.1"},
        "must be a list",
        "neg_scores",
    ),
    ({"query": "q", "pos": ["p"], "type": "weird"}, "unknown value", "type"),
    ({"query": "q", "pos": ["p"], "prompt": 7}, "must be a string or null", "prompt"),
    ({"query": "q", "pos": ["p"], "batch_size": 0}, "positive integer", "batch_size"),
    ({"query": "q", "pos": ["p"], "train_group_size": "8"}, "positive integer", "train_group_size"),
]


@pytest.mark.parametrize(("line", "problem", "field"), BAD_LINES)
def test_bad_line_stops_with_file_line_and_field(tmp_path, line, problem, field):
    path = _write(
        tmp_path / "data.jsonl", [GOOD, "", line]
    )  # line 2 is blank (ignored), the bad one is line 3
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    message = str(info.value)
    assert message.startswith(f"{path}:line 3: ")
    assert problem in message
    if field is not None:
        assert f"field '{field}'" in message


def test_non_utf8_names_the_line(tmp_path):
    path = _write(tmp_path / "latin.jsonl", [GOOD, GOOD, b'{"query": "caf\xe9", "pos": ["p"]}'])
    with pytest.raises(DataError, match=r"latin.jsonl:line 3: not valid UTF-8 \(byte 0xe9 at column 15\)"):
        read_jsonl(path)


def test_empty_files_and_folders(tmp_path):
    with pytest.raises(DataError, match="the file is empty"):
        read_jsonl(_write(tmp_path / "empty.jsonl", []))
    with pytest.raises(DataError, match="the file is empty"):
        read_jsonl(_write(tmp_path / "blank.jsonl", ["", "   "]))
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "notes.txt").write_text("not data")
    with pytest.raises(DataError, match=r"nothing: folder has no .jsonl/.json/.parquet/.arrow files"):
        expand_train_data(str(folder))
    with pytest.raises(DataError, match="no such file or folder"):
        expand_train_data(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="empty list"):
        expand_train_data([])


def test_skip_mode_counts_and_reports(tmp_path):
    rows = [GOOD, '{"broken', GOOD, {"query": "", "pos": ["p"]}, {"query": "q", "pos": []}, GOOD, GOOD]
    path = _write(tmp_path / "mixed.jsonl", rows)
    report = SkipReport()
    examples = read_jsonl(path, on_bad_line="skip", report=report)
    assert [ex.line for ex in examples] == [1, 3, 6, 7]
    assert report.counts == {str(path): 3}
    assert [m.split(": ")[0] for m in report.examples[str(path)]] == [f"{path}:line {n}" for n in (2, 4, 5)]
    summary = report.summary()
    assert "skipped 3 bad line(s)" in summary and f"{path}: 3 line(s) skipped" in summary
    with pytest.raises(DataError, match="all 2 line\\(s\\) are bad"):
        read_jsonl(_write(tmp_path / "allbad.jsonl", ["{", "}"]), on_bad_line="skip", report=SkipReport())
    with pytest.raises(ValueError, match="on_bad_line"):
        read_jsonl(path, on_bad_line="ignore")


def test_group_level_checks_missing_negatives_and_mixed_scores(tmp_path):
    path = _write(tmp_path / "noneg.jsonl", [GOOD, {"query": "q", "pos": ["p"]}])
    with pytest.raises(
        DataError, match=r"noneg.jsonl:line 2: field 'neg': no negatives, but train_group_size is 8"
    ):
        load_dataset(path, name="n", no_in_batch_neg=False, train_group_size=8)
    assert (
        len(load_dataset(path, name="n", no_in_batch_neg=False, train_group_size=1)) == 2
    )  # pairs need none
    scored = {**GOOD, "pos_scores": [1.0], "neg_scores": [0.5, 0.2]}
    mixed = _write(tmp_path / "mixed.jsonl", [scored, GOOD, scored])
    with pytest.raises(DataError, match=r"mixed.jsonl:line 2: field 'pos_scores': line lacks teacher scores"):
        load_dataset(mixed, name="m", no_in_batch_neg=False, train_group_size=3)
    report = SkipReport()
    ds = load_dataset(
        mixed, name="m", no_in_batch_neg=False, train_group_size=3, on_bad_line="skip", report=report
    )
    assert [ex.line for ex in ds.examples] == [1, 3] and report.total == 1 and ds.has_scores


def test_datamodule_stops_before_training_or_reports_skips(tmp_path, tokenizer, caplog):
    good = _write(tmp_path / "good.jsonl", [GOOD] * 4)
    bad = _write(
        tmp_path / "bad.jsonl",
        [GOOD, GOOD, {"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1, 2], "neg_scores": [3]}],
    )
    common = {
        "tokenizer": tokenizer,
        "bucket_edges": [],
        "bucket_batch_sizes": [2],
        "train_group_size": 2,
        "cache_dir": str(tmp_path / "c"),
    }
    # the stage-2 source is validated in setup even when training starts on the pairs source
    dm = M3DataModule.from_config(train_data=str(bad), pairs_data=str(good), **common)
    with pytest.raises(DataError, match=r"bad.jsonl:line 3: field 'pos_scores'"):
        dm.setup("fit")
    dm = M3DataModule.from_config(train_data=[str(good), str(bad)], on_bad_line="skip", **common)
    with caplog.at_level(logging.WARNING, logger="m3lit.data.datamodule"):
        dm.setup("fit")
    assert dm.skip_report.counts == {str(bad): 1}
    assert "skipped 1 bad line(s)" in caplog.text and "bad.jsonl:line 3" in caplog.text
    assert sum(len(ds) for ds in dm.sources["labelled"].datasets) == 6
