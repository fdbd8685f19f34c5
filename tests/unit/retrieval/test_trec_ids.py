"""Ids as BEIR allows them (any string) in TREC run files: escaped reversibly, evaluated end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from m3lit.evaluate import main
from m3lit.retrieval.beir import load_beir, write_beir
from m3lit.retrieval.report.provenance import read_results
from m3lit.retrieval.trec import from_trec_id, read_trec_run, trec_id

FAST = ["progress=false", "retrieval.batch_size=16", "modes=[dense,sparse,bm25]", "retrieval.passage_max_len=64"]  # fmt: skip
ODD = ["getting started", "50% off", "tab\there", "a\u00a0b", "%20 literal", "naïve ok", "x"]


def test_trec_id_escapes_whitespace_and_percent_only_and_round_trips():
    assert [trec_id(i) for i in ODD] == [
        "getting%20started",
        "50%25%20off",
        "tab%09here",
        "a%C2%A0b",
        "%2520%20literal",
        "naïve%20ok",
        "x",
    ]
    for value in ODD:
        assert len(trec_id(value).split()) == 1 and from_trec_id(trec_id(value)) == value


def _renamed(name: str, i: int) -> str:
    return f"{name} {ODD[i % len(ODD)]} {i}"


@pytest.fixture
def spaced_beir(tiny_beir_dir, tmp_path):
    """The tiny BEIR folder with every id renamed to hold spaces, a tab-free odd character or a ``%``."""
    data = load_beir(tiny_beir_dir)
    rows = [json.loads(line) for line in (tiny_beir_dir / "corpus.jsonl").read_text().splitlines()]
    doc = {r["_id"]: _renamed("section", i).replace("\t", " ") for i, r in enumerate(rows)}
    queries = {json.loads(q)["_id"]: json.loads(q)["text"] for q in (tiny_beir_dir / "queries.jsonl").open()}
    query = {qid: _renamed("question", i).replace("\t", " ") for i, qid in enumerate(queries)}
    corpus = {doc[r["_id"]]: (r["title"], r["text"]) for r in rows}
    qrels = {
        query[data.query_ids[q]]: {doc[data.corpus_ids[d]]: g for d, g in judged.items()}
        for q, judged in enumerate(data.qrels)
    }
    return (
        write_beir(tmp_path / "spaced", corpus, {query[q]: t for q, t in queries.items()}, qrels),
        doc,
        query,
    )


def test_a_beir_folder_with_spaced_ids_evaluates_end_to_end(export_dir, tiny_beir_dir, spaced_beir, tmp_path):
    """Issue 30 item 5: no crash after the encoding; the metrics equal those of the same folder with plain
    ids, and every run file reads back into the ranking of the plain-id run."""
    spaced, doc, query = spaced_beir
    plain = main([f"model={export_dir}", f"data={tiny_beir_dir}", f"output_dir={tmp_path / 'a'}", *FAST])
    odd = main([f"model={export_dir}", f"data={spaced}", f"output_dir={tmp_path / 'b'}", *FAST])
    assert odd == plain and read_results(tmp_path / "b" / "results.json")[0] == plain
    plain_data, odd_data = load_beir(tiny_beir_dir), load_beir(spaced)
    for mode in ("dense", "sparse", "bm25"):
        lines = (tmp_path / "b" / "runs" / f"{mode}.trec").read_text().splitlines()
        assert lines and all(len(line.split()) == 6 for line in lines)
        want = (tmp_path / "a" / "runs" / f"{mode}.trec").read_text().splitlines()
        renamed = [
            " ".join([trec_id(query[f[0]]), f[1], trec_id(doc[f[2]]), *f[3:]]) for f in map(str.split, want)
        ]
        assert lines == renamed
        back_plain = read_trec_run(tmp_path / "a" / "runs" / f"{mode}.trec", plain_data)
        back_odd = read_trec_run(tmp_path / "b" / "runs" / f"{mode}.trec", odd_data)
        np.testing.assert_array_equal(back_odd.indices, back_plain.indices)
