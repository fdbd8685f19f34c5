"""An empty queries.jsonl is reported as such, naming the file (issue 30, item 6), not as a qrels line."""

from __future__ import annotations

import json

import pytest

from m3lit.files.jsonl import DataError
from m3lit.retrieval.beir import load_beir


def test_an_empty_queries_file_is_named(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "d1", "text": "a document"}) + "\n", encoding="utf-8"
    )
    (tmp_path / "queries.jsonl").write_text("", encoding="utf-8")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        load_beir(tmp_path, "test")
    assert "queries.jsonl" in str(error.value) and "empty queries file" in str(error.value), str(error.value)
    assert "qrels" not in str(error.value)
