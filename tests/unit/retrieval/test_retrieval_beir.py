"""BEIR loading: the layout round-trips, and every malformed input is an error naming file and line."""

from __future__ import annotations

import json
import logging

import pytest

from m3lit.files.jsonl import DataError
from m3lit.retrieval import load_beir, write_beir


def make(tmp_path, corpus=None, queries=None, qrels_lines=None, split="test"):
    root = tmp_path / "ds"
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    corpus = (
        corpus
        if corpus is not None
        else [{"_id": "d1", "title": "T", "text": "alpha"}, {"_id": "d2", "text": "beta"}]
    )
    queries = (
        queries
        if queries is not None
        else [{"_id": "q1", "text": "a?"}, {"_id": "q2", "text": "b?"}, {"_id": "q3", "text": "c?"}]
    )
    (root / "corpus.jsonl").write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in corpus)
    )
    (root / "queries.jsonl").write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in queries)
    )
    lines = (
        qrels_lines
        if qrels_lines is not None
        else ["query-id\tcorpus-id\tscore", "q2\td2\t1", "q1\td1\t2", "q1\td2\t0"]
    )
    (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_load_valid_dataset(tmp_path):
    ds = load_beir(make(tmp_path))
    assert ds.corpus_ids == ["d1", "d2"]
    assert ds.corpus_texts == ["T alpha", "beta"]  # title + " " + text
    assert ds.query_ids == ["q2", "q1"]  # queries of the split's qrels, in qrels order; q3 not judged here
    assert ds.query_texts == ["b?", "a?"]
    assert ds.qrels == [{1: 1}, {0: 2, 1: 0}]
    assert ds.num_relevant_queries == 2
    assert ds.name == "ds"


def test_write_beir_round_trips(tmp_path):
    root = write_beir(
        tmp_path / "rt",
        {"a": ("Title", "text a"), "b": "text b"},
        {"x": "query x"},
        {"x": {"a": 2, "b": 0}},
        split="dev",
    )
    ds = load_beir(root, "dev")
    assert (ds.corpus_ids, ds.corpus_texts, ds.query_ids, ds.qrels) == (
        ["a", "b"],
        ["Title text a", "text b"],
        ["x"],
        [{0: 2, 1: 0}],
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"corpus": [{"_id": "d1", "text": "a"}, "{not json"]}, r"corpus.jsonl:line 2: malformed JSON"),
        (
            {"corpus": [{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}]},
            r"corpus.jsonl:line 2: field '_id': duplicate id 'd1' \(first seen on line 1\)",
        ),
        ({"corpus": [{"_id": "d1"}]}, r"corpus.jsonl:line 1: field 'text': missing"),
        ({"corpus": [{"text": "x"}]}, r"corpus.jsonl:line 1: field '_id': missing"),
        (
            {"corpus": [{"_id": "d1", "text": "a", "title": 3}]},
            r"corpus.jsonl:line 1: field 'title': not a string",
        ),
        ({"corpus": ["[1, 2]"]}, r"corpus.jsonl:line 1: expected a JSON object"),
        ({"corpus": []}, r"corpus.jsonl: empty corpus"),
        (
            {"queries": [{"_id": "q1", "text": "a"}, {"_id": "q1", "text": "b"}]},
            r"queries.jsonl:line 2: field '_id': duplicate id 'q1'",
        ),
        ({"qrels_lines": ["q1\td9\t1"]}, r"test.tsv:line 1: unknown document id 'd9'"),
        ({"qrels_lines": ["q1\td1\t1", "q7\td1\t1"]}, r"test.tsv:line 2: unknown query id 'q7'"),
        (
            {"qrels_lines": ["q1\td1\t1", "q1\td1\t2"]},
            r"test.tsv:line 2: duplicate judgement for \('q1', 'd1'\) \(first on line 1\)",
        ),
        ({"qrels_lines": ["q1\td1\t1", "q1\td2\thigh"]}, r"test.tsv:line 2: score 'high' is not an integer"),
        ({"qrels_lines": ["q1 d1 1"]}, r"test.tsv:line 1: expected 3 tab-separated fields"),
        ({"qrels_lines": ["query-id\tcorpus-id\tscore"]}, r"test.tsv: no judgements"),
        ({"qrels_lines": ["q1\td1\t0"]}, r"test.tsv: no query has a relevant document"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, kwargs, message):
    with pytest.raises(DataError, match=message):
        load_beir(make(tmp_path, **kwargs))


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        load_beir(tmp_path / "nope")
    root = make(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"not a BEIR dataset folder: no qrels/dev.tsv"):
        load_beir(root, "dev")


def test_unknown_qrels_can_be_skipped_explicitly_and_are_counted(tmp_path, caplog):
    root = make(tmp_path, qrels_lines=["q1\td1\t1", "q1\td9\t1", "q8\td1\t1"])
    with caplog.at_level(logging.WARNING):
        ds = load_beir(root, unknown_qrels="skip")
    assert ds.skipped_qrels == 2 and ds.qrels == [{0: 1}]
    assert any("skipped 2 qrels rows" in r.getMessage() for r in caplog.records)
