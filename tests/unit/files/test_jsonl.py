"""The one JSON-lines reader: line numbers, the located DataError, skipping, and the same error from every
caller (training data, BEIR files, `m3lit.encode` input, mining's candidate pool)."""

from __future__ import annotations

import pytest

from m3lit.corpora.mining import _pool
from m3lit.data.schema import SkipReport, read_jsonl
from m3lit.encode import read_passages
from m3lit.files.jsonl import DataError, read_records
from m3lit.retrieval import load_beir


def write(path, lines: list[bytes | str]):
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def test_data_error_message_names_what_is_known():
    assert str(DataError("bad")) == "bad"
    assert str(DataError("bad", path="a.jsonl")) == "a.jsonl: bad"
    assert str(DataError("bad", path="a.jsonl", line=4)) == "a.jsonl:line 4: bad"
    assert str(DataError("bad", field="pos[1]")) == "field 'pos[1]': bad"
    err = DataError("bad", path="a.jsonl", line=4, field="text")
    assert str(err) == "a.jsonl:line 4: field 'text': bad"
    assert (err.path, err.line, err.field, err.problem) == ("a.jsonl", 4, "text", "bad")
    assert isinstance(err, ValueError)
    moved = DataError("bad", field="text").at("b.jsonl", 9)
    assert str(moved) == "b.jsonl:line 9: field 'text': bad"


def test_records_keep_real_line_numbers_and_ignore_blank_lines(tmp_path):
    path = write(tmp_path / "x.jsonl", ['{"a": 1}', "", "   ", '{"a": 2, "b": [3]}'])
    assert list(read_records(path)) == [(1, {"a": 1}), (4, {"a": 2, "b": [3]})]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b'{"a": "caf\xe9"}', "not valid UTF-8 (byte 0xe9 at column 11)"),
        (b'{"a": 1', "malformed JSON (Expecting ',' delimiter at column 8)"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'"text"', "expected a JSON object, got str"),
    ],
)
def test_undecodable_lines_name_file_and_line(tmp_path, line, problem):
    path = write(tmp_path / "x.jsonl", ['{"a": 1}', line])
    with pytest.raises(DataError) as info:
        list(read_records(path))
    assert str(info.value) == f"{path}:line 2: {problem}"
    assert (info.value.line, info.value.field) == (2, None)


def test_parse_errors_are_located_and_skip_hands_them_over(tmp_path):
    def parse(record):
        if not isinstance(record.get("text"), str):
            raise DataError("missing or not a string", field="text")
        return record["text"].upper()

    path = write(tmp_path / "x.jsonl", ['{"text": "a"}', '{"body": "b"}', "oops", '{"text": "c"}'])
    with pytest.raises(DataError, match=r"x.jsonl:line 2: field 'text': missing or not a string$"):
        list(read_records(path, parse))
    skipped: list[DataError] = []
    assert list(read_records(path, parse, skip=skipped.append)) == [(1, "A"), (4, "C")]
    assert [(e.line, e.field) for e in skipped] == [(2, "text"), (3, None)]
    assert all(str(e).startswith(f"{path}:line {e.line}: ") for e in skipped)


def test_every_caller_reports_a_malformed_line_the_same_way(tmp_path):
    """One reader, one error: the same bad second line gives the same DataError prefix everywhere."""
    good = '{"_id": "d1", "text": "alpha", "query": "q", "pos": ["p"]}'
    expected = "line 2: malformed JSON (Expecting property name enclosed in double quotes at column 2)"

    train = write(tmp_path / "train.jsonl", [good, "{oops"])
    passages = write(tmp_path / "passages.jsonl", [good, "{oops"])
    pool = write(tmp_path / "pool.jsonl", [good, "{oops"])
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    write(beir / "qrels" / "test.tsv", ["q1\td1\t1"])
    write(beir / "corpus.jsonl", [good, "{oops"])
    write(beir / "queries.jsonl", ['{"_id": "q1", "text": "a?"}'])

    calls = {
        train: lambda: read_jsonl(train),
        passages: lambda: read_passages(passages),
        pool: lambda: _pool(pool, []),
        beir / "corpus.jsonl": lambda: load_beir(beir),
    }
    for path, call in calls.items():
        with pytest.raises(DataError) as info:
            call()
        assert str(info.value).startswith(f"{path}:{expected}"), str(info.value)
        assert (info.value.path, info.value.line) == (path, 2)


def test_callers_keep_their_skip_policies(tmp_path):
    good = '{"_id": "d1", "text": "alpha", "query": "q", "pos": ["p"]}'
    path = write(tmp_path / "mixed.jsonl", [good, "{oops", '{"query": "q", "pos": ["p"]}', good])
    report = SkipReport()
    assert [ex.line for ex in read_jsonl(path, on_bad_line="skip", report=report)] == [1, 3, 4]
    assert report.counts == {str(path): 1}  # line 3 is a good training line (no text field needed)
    assert report.examples[str(path)][0].startswith(f"{path}:line 2: malformed JSON")
    ids, texts, skipped = read_passages(path, skip_invalid=True)
    assert (ids, texts, skipped) == (["d1", "d1"], ["alpha", "alpha"], 2)  # lines 2 and 3 (no text)
