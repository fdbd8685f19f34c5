"""Hybrid search in Qdrant's local mode against m3lit's own retrieval on the same BEIR folder."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from m3lit.encode import encode_file
from m3lit.model import M3Model
from m3lit.model.tiny import tiny_xlmr_config
from m3lit.retrieval.beir import load_beir
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.pipeline import evaluate_retrieval, retrieve, score_rankings
from m3lit.vectordb.cli import main
from m3lit.vectordb.collection import doc_ids, index_encoded, open_client
from m3lit.vectordb.search import MODES, dataset_rows, encode_queries, relabel, search

pytest.importorskip("qdrant_client")

#: Small candidate depths, so that on 40 passages the fused modes re-rank a real subset.
CONFIG = RetrievalConfig(hybrid_k=12, all_rerank_k=8, colbert_dtype="float32")


@pytest.fixture(scope="module")
def model_dir(tokenizer, tmp_path_factory):
    """A tiny random model whose scores are spread out (initializer_range=1): no near-ties that float
    rounding could order differently in the database and in m3lit."""
    config = tiny_xlmr_config(len(tokenizer), max_length=128)
    config.initializer_range = 1.0
    torch.manual_seed(0)
    return M3Model.from_config(config, tokenizer, colbert_dim=16).save_pretrained(
        tmp_path_factory.mktemp("m")
    )


@pytest.fixture(scope="module")
def indexed(model_dir, tiny_beir_dir, tmp_path_factory):
    """The BEIR corpus encoded by m3lit.encode and loaded into an in-memory collection."""
    folder = tmp_path_factory.mktemp("encoded")
    encode_file(
        model=str(model_dir), input=str(tiny_beir_dir / "corpus.jsonl"), output_dir=str(folder),
        colbert=True, progress=False,
    )  # fmt: skip
    client = open_client(None)
    assert index_encoded(client, "tiny", folder, batch_size=16) == 40
    return client


def _database_run(client, model, dataset, config):
    queries = encode_queries(model, dataset.query_texts, config)
    found = search(client, "tiny", queries, MODES, config, depth=10)
    rows = dataset_rows(doc_ids(client, "tiny"), dataset.corpus_ids)
    return {mode: relabel(r, rows) for mode, r in found.rankings.items()}


def _assert_same_up_to_near_ties(got, want, atol: float) -> None:
    """Equal lists, except that passages whose fused scores differ by less than ``atol`` (a sum of float32
    terms added in another order differs in the last bit) may trade places, also across the cut-off."""
    for q in range(want.num_queries):
        scores = want.scores[q]
        for j in np.flatnonzero(got.indices[q] != want.indices[q]):
            near = np.abs(scores - scores[j]) < atol
            assert near.sum() > 1 or j == len(scores) - 1, (q, j, got.indices[q], want.indices[q], scores)
            assert got.indices[q, j] not in want.indices[q][~near], (q, j)


@pytest.mark.parametrize("candidates", ["dense", "hybrid"])
def test_every_mode_ranks_as_m3lit(indexed, model_dir, tiny_beir_dir, candidates):
    model = M3Model.from_pretrained(model_dir).eval()
    dataset = load_beir(tiny_beir_dir)
    config = replace(CONFIG, all_candidates=candidates)
    got = _database_run(indexed, model, dataset, config)
    want = retrieve(model, dataset, MODES, config, depth=10).rankings
    for mode in ("dense", "sparse"):  # one score each: the same lists, position by position
        np.testing.assert_array_equal(got[mode].indices, want[mode].indices, err_msg=mode)
    for mode in MODES:
        np.testing.assert_allclose(got[mode].scores, want[mode].scores, rtol=0, atol=1e-5, err_msg=mode)
        _assert_same_up_to_near_ties(got[mode], want[mode], 1e-5)
    assert (got["sparse"].indices >= 0).sum() > 0 and got["all"].indices.shape == want["all"].indices.shape


def test_all_against_m3lit_with_its_float16_colbert_store(indexed, model_dir, tiny_beir_dir):
    """m3lit.evaluate keeps ColBERT vectors in float16 by default; the database holds them in float32. The
    MaxSim scores then differ by float16 rounding (< 1e-3 here), and All's nDCG@10 by at most 1e-4."""
    model = M3Model.from_pretrained(model_dir).eval()
    dataset = load_beir(tiny_beir_dir)
    default = replace(CONFIG, colbert_dtype="float16")
    got = _database_run(indexed, model, dataset, default)
    run = retrieve(model, dataset, ("all",), default, depth=10)
    ours = score_rankings(got, dataset, ["ndcg@10"])["all"]["ndcg@10"]
    theirs = score_rankings(run.rankings, dataset, ["ndcg@10"])["all"]["ndcg@10"]
    assert abs(ours - theirs) <= 1e-4
    np.testing.assert_allclose(got["all"].scores, run.rankings["all"].scores, rtol=0, atol=1e-3)


def test_commands_index_then_search_report_m3lit_metrics(model_dir, tiny_beir_dir, tmp_path):
    db, out = tmp_path / "qdrant", tmp_path / "out"
    corpus = tiny_beir_dir / "corpus.jsonl"
    main(["index", f"path={db}", "collection=docs", f"model={model_dir}", f"corpus={corpus}"])
    assert (db / "encoded" / "docs" / "colbert.npy").is_file()
    args = [f"path={db}", "collection=docs", f"model={model_dir}", f"dataset_dir={tiny_beir_dir}"]
    depths = ["hybrid_k=12", "all_rerank_k=8", "metrics=ndcg@10,recall@20", f"output_dir={out}"]
    out.mkdir()
    main(["search", *args, *depths])
    got = json.loads((out / "results.json").read_text())["results"]
    model = M3Model.from_pretrained(model_dir).eval()
    # the command reads the database's float32 vectors: m3lit's float32 ColBERT store gives the same table
    want = evaluate_retrieval(
        model, tiny_beir_dir, modes=MODES, metrics=["ndcg@10", "recall@20"], config=CONFIG
    )
    assert set(got) == set(want)
    for mode, row in want.items():
        assert got[mode] == pytest.approx(row, abs=1e-6), mode
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(f"{m}.trec" for m in MODES)


def test_command_errors_are_one_line(tmp_path, model_dir, tiny_beir_dir, command_error):
    (tmp_path / "enc").mkdir()
    code, line = command_error(
        main, ["index", f"path={tmp_path / 'db'}", "collection=c", f"encoded={tmp_path / 'enc'}"]
    )
    assert code == 1 and line.startswith(f"error: encoded={tmp_path / 'enc' / 'ids.txt'}: missing")
    assert not (tmp_path / "db").exists()
    base = [
        "search",
        f"path={tmp_path}",
        "collection=c",
        f"model={model_dir}",
        f"dataset_dir={tiny_beir_dir}",
    ]
    code, line = command_error(main, [*base, "modes=dense,colbert"])
    assert code == 2 and "colbert" in line and line.startswith("error: vectordb search:")
    code, line = command_error(main, [*base, "all_weights=1,2"])
    assert code == 2 and "all_weights=1,2" in line
    assert command_error(main, ["find"])[0] == 2
