"""The offline demo corpus: deterministic, BEIR layout, answerable held-out queries, clean hard negatives."""

from __future__ import annotations

import json

import pytest

from m3lit.corpora.demo.build import build_demo, make_pairs, split_doc
from m3lit.data.schema import read_jsonl

#: A few stdlib packages: enough docstrings for a small but complete build in seconds.
MODULES = ("argparse", "collections", "email", "json", "logging", "textwrap", "urllib")


def _rows(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    kwargs = {"modules": MODULES, "num_test": 40, "vocab_size": 700}
    return build_demo(root / "a", **kwargs), build_demo(root / "b", **kwargs)


def test_demo_is_deterministic(small_demo):
    a, b = small_demo
    assert a.manifest["sha256"] == b.manifest["sha256"]  # every file, the tokenizer included
    assert a.manifest["hash"] == b.manifest["hash"]
    for name in (
        "train.jsonl",
        "pairs.jsonl",
        "eval/corpus.jsonl",
        "eval/qrels/test.tsv",
        "tokenizer/tokenizer.json",
    ):
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes()


def test_demo_layout_and_split(small_demo):
    demo = small_demo[0]
    corpus = {r["_id"]: r["text"] for r in _rows(demo.eval_dir / "corpus.jsonl")}
    queries = {r["_id"]: r["text"] for r in _rows(demo.eval_dir / "queries.jsonl")}
    lines = (demo.eval_dir / "qrels" / "test.tsv").read_text().splitlines()
    assert lines[0] == "query-id\tcorpus-id\tscore"
    qrels = [line.split("\t") for line in lines[1:]]
    assert len(queries) == len(qrels) == 40 == demo.manifest["sizes"]["eval_queries"]
    assert len(corpus) == demo.manifest["sizes"]["eval_corpus"] > 10 * len(queries)  # many distractors
    held_out = set()
    for qid, did, score in qrels:
        assert qid in queries and did in corpus and score == "1"  # every held-out query is answerable
        held_out.add(corpus[did])
    train = _rows(demo.train)
    pairs = _rows(demo.pairs)
    assert len(train) == len(pairs) == len(corpus) - len(queries) == demo.manifest["sizes"]["train_pairs"]
    train_queries = {r["query"] for r in train}
    assert not train_queries & set(queries.values())  # no held-out query is trained on
    for row, pair in zip(train, pairs, strict=True):
        assert pair == {"query": row["query"], "pos": row["pos"], "neg": []}
        assert len(row["neg"]) == 15 and len(set(row["neg"])) == 15
        assert row["pos"][0] not in row["neg"]  # the positive is never its own negative
        assert not held_out & (
            {row["pos"][0]} | set(row["neg"])
        )  # held-out positives never appear in training
    # the files are valid training data for m3lit
    assert len(read_jsonl(demo.train)) == len(train) and len(read_jsonl(demo.pairs)) == len(pairs)


def test_demo_tokenizer_and_cache(small_demo):
    from transformers import AutoTokenizer

    demo = small_demo[0]
    tok = AutoTokenizer.from_pretrained(str(demo.tokenizer_dir))
    assert [tok.cls_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
    assert tok.mask_token_id == len(tok) - 1
    stamp = (demo.root / "manifest.json").stat().st_mtime_ns
    again = build_demo(demo.root, modules=MODULES, num_test=40, vocab_size=700)
    assert (
        again.manifest == demo.manifest and (demo.root / "manifest.json").stat().st_mtime_ns == stamp
    )  # cached


def test_split_doc_and_duplicate_queries():
    assert split_doc("Return x.\n\nMore.") == ("Return x.", "More.")
    assert split_doc("f(a, b) -> int\n\nAdd two numbers.  Then stop.") == ("Add two numbers.", "Then stop.")
    assert split_doc("No terminator here") == ("No terminator here", "")
    items = [
        {"name": "m.a", "signature": "(x)", "doc": "Return the thing now.\n\nDetails of a."},
        {
            "name": "m.b",
            "signature": "()",
            "doc": "Return the thing now.\n\nDetails of b.",
        },  # duplicate query
        {"name": "m.c", "signature": "()", "doc": "Too short."},  # fewer than 3 words
        {"name": "m.d", "signature": "(y=1)", "doc": "Compute the other value.\nSecond line."},
    ]
    assert make_pairs(items) == [
        {
            "name": "m.d",
            "query": "Compute the other value.",
            "pos": "m.d(y=1)\nSecond line.",
            "rest": "Second line.",
        }
    ]
