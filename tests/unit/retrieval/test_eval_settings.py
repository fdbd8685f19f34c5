"""Evaluation settings: BEIR's ignore_identical_ids, TREC run files, the recorded settings and their re-run,
mean pooling and prefixes (released baselines), and the Dense+MCLS mode. Every expected value is computed
here from first principles (naive metrics, direct encoder calls, pytrec_eval)."""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import builtin_docstrings

from m3lit.evaluate import main
from m3lit.inference.encoding import encode_texts
from m3lit.inference.mcls import insert_cls_tokens, mcls_forward
from m3lit.model import M3Model
from m3lit.retrieval import (
    DEFAULT_MODES,
    RetrievalConfig,
    evaluate_retrieval,
    index_corpus,
    load_beir,
    retrieve,
    write_beir,
)
from m3lit.retrieval.report.provenance import dataset_hash, read_results

MAX_LEN = 64
METRICS = ["ndcg@10", "recall@5", "mrr@10"]


def small_config(**kw) -> RetrievalConfig:
    return RetrievalConfig(batch_size=8, query_max_len=MAX_LEN, passage_max_len=MAX_LEN, **kw)


@pytest.fixture(scope="module")
def model(tiny_config, tokenizer):
    torch.manual_seed(0)
    model = M3Model.from_config(tiny_config, tokenizer, colbert_dim=16).eval()
    with torch.no_grad():  # a random sparse bias near 0 would leave most weights at ReLU's 0
        model.sparse_head.linear.bias.fill_(0.5)
    return model


@pytest.fixture(scope="module")
def self_dir(tmp_path_factory):
    """Queries whose ids are corpus ids (ArguAna/Quora style): each query is the text of its namesake."""
    docs = [text[:300] for text in builtin_docstrings()[:24]]
    corpus = {f"d{i}": text for i, text in enumerate(docs)}
    queries = {"d3": docs[3], "d7": docs[7], "q1": " ".join(docs[10].split()[:8])}
    qrels = {"d3": {"d4": 1, "d5": 2}, "d7": {"d8": 1}, "q1": {"d10": 1, "d3": 1}}
    return write_beir(tmp_path_factory.mktemp("self") / "self", corpus, queries, qrels)


def naive_metrics(docs: list[str], judged: dict[str, int]) -> dict[str, float]:
    """nDCG@10 (linear gain, log2), Recall@5, MRR@10 of one ranked id list."""
    relevant = {d: g for d, g in judged.items() if g > 0}
    dcg = sum(relevant.get(d, 0) / math.log2(r + 2) for r, d in enumerate(docs[:10]))
    ideal = sum(g / math.log2(r + 2) for r, g in enumerate(sorted(relevant.values(), reverse=True)[:10]))
    first = next((r for r, d in enumerate(docs[:10]) if d in relevant), None)
    return {
        "ndcg@10": dcg / ideal,
        "recall@5": len(set(docs[:5]) & set(relevant)) / len(relevant),
        "mrr@10": 0.0 if first is None else 1 / (first + 1),
    }


def expected_means(full, dataset, mode: str, drop: bool) -> dict[str, float]:
    per_query = []
    for q, qid in enumerate(dataset.query_ids):
        docs = [dataset.corpus_ids[d] for d in full.rankings[mode].row(q)[0]]
        if drop:
            docs = [d for d in docs if d != qid]
        judged = {dataset.corpus_ids[d]: g for d, g in dataset.qrels[q].items()}
        per_query.append(naive_metrics(docs, judged))
    return {m: float(np.mean([p[m] for p in per_query])) for m in METRICS}


def test_ignore_identical_ids_drops_the_query_itself_before_scoring(model, self_dir, tmp_path):
    dataset = load_beir(self_dir)
    cfg = small_config()
    modes = ["dense", "sparse", "all", "bm25"]
    full = retrieve(model, dataset, modes, cfg, depth=len(dataset.corpus_ids))  # every document, ranked
    for mode in ("dense", "bm25"):  # the query's own text ranks itself first: the drop matters
        assert full.rankings[mode].indices[0, 0] == dataset.corpus_ids.index("d3")
    on = evaluate_retrieval(
        model, dataset, modes=modes, metrics=METRICS, config=cfg, runs_dir=tmp_path / "on"
    )
    off = evaluate_retrieval(
        model, dataset, modes=modes, metrics=METRICS, config=cfg, ignore_identical_ids=False
    )
    for mode in modes:
        assert on[mode] == pytest.approx(expected_means(full, dataset, mode, drop=True), abs=1e-6), mode
        assert off[mode] == pytest.approx(expected_means(full, dataset, mode, drop=False), abs=1e-6), mode
    assert on["dense"]["ndcg@10"] > off["dense"]["ndcg@10"]
    # the written lists: the query's own document gone, still `depth` (= 10) entries per query
    lines = [line.split() for line in (tmp_path / "on" / "dense.trec").read_text().splitlines()]
    for qid in dataset.query_ids:
        docs = [row[2] for row in lines if row[0] == qid]
        assert len(docs) == 10 and qid not in docs


def test_trec_runs_rescored_by_pytrec_eval_equal_our_ndcg(model, tiny_beir_dir, tmp_path):
    import pytrec_eval

    modes = ["dense", "colbert", "all", "bm25"]
    results = evaluate_retrieval(
        model, tiny_beir_dir, modes=modes, config=small_config(), runs_dir=tmp_path / "runs"
    )
    qrels: dict[str, dict[str, int]] = {}
    for line in (tiny_beir_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, grade = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(grade)
    relevant = [q for q, judged in qrels.items() if any(g > 0 for g in judged.values())]
    for mode in modes:
        run: dict[str, dict[str, float]] = {}
        ranks: dict[str, list[int]] = {}
        for line in (tmp_path / "runs" / f"{mode}.trec").read_text().splitlines():
            qid, q0, docid, rank, score, tag = line.split(" ")
            assert q0 == "Q0" and tag == mode
            run.setdefault(qid, {})[docid] = float(score)
            ranks.setdefault(qid, []).append(int(rank))
        assert all(r == list(range(1, len(r) + 1)) for r in ranks.values())
        assert set(run) == set(qrels)
        scored = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
        want = np.mean([scored[q]["ndcg_cut_10"] for q in relevant])
        assert results[mode]["ndcg@10"] == pytest.approx(want, abs=1e-6), mode


@pytest.fixture(scope="module")
def export_dir(model, tmp_path_factory):
    return model.save_pretrained(tmp_path_factory.mktemp("model") / "export")


def test_settings_are_recorded_and_a_rerun_reproduces_the_table(export_dir, tiny_beir_dir, tmp_path):
    custom = [
        "progress=false",
        "modes=[dense,dense+sparse,all,bm25]",
        "metrics=[ndcg@10,recall@20]",
        "retrieval.batch_size=5",
        "retrieval.query_max_len=12",
        "retrieval.passage_max_len=24",
        "retrieval.hybrid_weights=[0.2,0.8]",
        "retrieval.all_weights=[0.15,0.5,0.35]",
        "retrieval.all_rerank_k=7",
    ]
    first = main([f"model={export_dir}", f"data={tiny_beir_dir}", f"output_dir={tmp_path / 'a'}", *custom])
    results, settings = read_results(tmp_path / "a" / "results.json")
    assert results == first
    want_cfg = RetrievalConfig(
        batch_size=5, query_max_len=12, passage_max_len=24, hybrid_weights=(0.2, 0.8),
        all_weights=(0.15, 0.5, 0.35), all_rerank_k=7,
    ).to_dict()  # fmt: skip
    assert settings["retrieval"] == want_cfg
    assert settings["model"] == str(export_dir) and settings["data"] == str(tiny_beir_dir)
    assert settings["modes"] == ["dense", "dense+sparse", "all", "bm25"]
    assert settings["metrics"] == ["ndcg@10", "recall@20"] and settings["ignore_identical_ids"] is True
    files = ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"]
    digest = hashlib.sha256()
    for name in files:
        data = (tiny_beir_dir / name).read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode() + data)
    assert settings["datasets"]["tiny"] == {
        "path": str(tiny_beir_dir),
        "sha256": digest.hexdigest(),
        "hashed": files,
    }

    again = main(
        [f"settings={tmp_path / 'a' / 'results.json'}", f"output_dir={tmp_path / 'b'}", "progress=false"]
    )
    assert again == first  # every value, to the last digit
    assert (tmp_path / "b" / "results.md").read_text() == (tmp_path / "a" / "results.md").read_text()
    assert read_results(tmp_path / "b")[1]["retrieval"] == want_cfg

    plain = main(
        [f"model={export_dir}", f"data={tiny_beir_dir}", f"output_dir={tmp_path / 'c'}", "progress=false"]
    )
    assert plain["all"] != first["all"]  # the settings change the numbers

    override = main(
        [f"settings={tmp_path / 'a'}", f"output_dir={tmp_path / 'd'}", "progress=false", "modes=[dense]"]
    )
    assert override == {"dense": first["dense"]}  # explicit key=value wins over the recorded settings


def test_dataset_hash_uses_the_manifest_when_present(tiny_beir_dir, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_beir_dir, tmp_path / "with_manifest")
    before = dataset_hash(folder)
    (folder / "manifest.json").write_text('{"files": {"corpus.jsonl": "abc"}}\n')
    after = dataset_hash(folder)
    assert after == {
        "sha256": hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest(),
        "hashed": ["manifest.json"],
    }
    assert before["sha256"] != after["sha256"]
    with pytest.raises(FileNotFoundError, match="qrels/dev.tsv"):
        dataset_hash(tiny_beir_dir, "dev")


def test_settings_without_a_settings_block_is_a_clear_error(tmp_path, command_error):
    (tmp_path / "results.json").write_text('{"dense": {"ndcg@10": 0.5}}\n')
    status, line = command_error(main, [f"settings={tmp_path / 'results.json'}"])
    assert status == 1 and line.startswith("error: ") and "results.json: no 'settings' block" in line


# ---------------------------------------------------------------------------------- pooling and prefixes
def naive_mean_pooled(model: M3Model, text: str, max_length: int) -> np.ndarray:
    ids = model.tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        hidden = model.encoder(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state[0]
    return F.normalize(hidden.mean(0), dim=-1).numpy()


def test_mean_pooling_equals_a_direct_encoder_computation(model, texts):
    got = encode_texts(model, texts, batch_size=4, max_length=MAX_LEN, pooling="mean", sparse=True)
    want = np.stack([naive_mean_pooled(model, t, MAX_LEN) for t in texts])
    np.testing.assert_allclose(got.dense, want, atol=1e-5)
    cls = encode_texts(model, texts, batch_size=4, max_length=MAX_LEN, sparse=True)
    assert not np.allclose(got.dense, cls.dense, atol=1e-3)  # a different vector than CLS
    for (a_ids, a_w), (b_ids, b_w) in zip(got.sparse, cls.sparse, strict=True):  # other heads unchanged
        np.testing.assert_array_equal(a_ids, b_ids)
        np.testing.assert_allclose(a_w, b_w, atol=1e-6)


def test_prefixes_equal_encoding_the_prefixed_strings(model, texts):
    got = encode_texts(model, texts, max_length=MAX_LEN, prefix="query: ", pooling="mean")
    want = encode_texts(model, ["query: " + t for t in texts], max_length=MAX_LEN, pooling="mean")
    np.testing.assert_array_equal(got.dense, want.dense)
    assert not np.allclose(got.dense, encode_texts(model, texts, max_length=MAX_LEN, pooling="mean").dense)


def test_pipeline_prefixes_and_pooling_equal_a_prefixed_dataset(model, tiny_beir_dir):
    dataset = load_beir(tiny_beir_dir)
    cfg = small_config(pooling="mean", query_prefix="query: ", passage_prefix="passage: ")
    run = retrieve(model, dataset, ["dense", "bm25"], cfg, depth=10)
    prefixed = load_beir(tiny_beir_dir)
    prefixed.query_texts = ["query: " + t for t in prefixed.query_texts]
    prefixed.corpus_texts = ["passage: " + t for t in prefixed.corpus_texts]
    ref = retrieve(model, prefixed, ["dense"], small_config(pooling="mean"), depth=10)
    np.testing.assert_array_equal(run.rankings["dense"].indices, ref.rankings["dense"].indices)
    np.testing.assert_allclose(run.rankings["dense"].scores, ref.rankings["dense"].scores, atol=1e-6)
    plain_bm25 = retrieve(model, dataset, ["bm25"], small_config(), depth=10).rankings["bm25"]
    np.testing.assert_array_equal(run.rankings["bm25"].indices, plain_bm25.indices)  # BM25 gets no prefix


def test_mean_pooling_rejects_head_modes_and_headless_models_keep_dense_and_bm25(
    model, tiny_beir_dir, tmp_path
):
    dataset = load_beir(tiny_beir_dir)
    for mode in ("sparse", "colbert", "dense+sparse", "all", "dense+mcls"):
        with pytest.raises(ValueError, match=rf"\['{re.escape(mode)}'\] need CLS pooling"):
            retrieve(model, dataset, ["dense", mode], small_config(pooling="mean"))
    with pytest.raises(ValueError, match="pooling must be one of"):
        RetrievalConfig(pooling="max")
    with pytest.raises(ValueError, match="cannot use pooling='mean'"):
        encode_texts(model, ["x"], pooling="mean", mcls_interval=16)
    folder = model.save_pretrained(tmp_path / "headless")
    (folder / "sparse_linear.pt").unlink()
    (folder / "colbert_linear.pt").unlink()
    headless = M3Model.from_pretrained(folder)
    results = evaluate_retrieval(headless, dataset, modes=DEFAULT_MODES, config=small_config(pooling="mean"))
    assert list(results) == ["dense", "bm25"]


# ---------------------------------------------------------------------------------------------- dense+mcls
def test_dense_mcls_equals_dense_on_texts_shorter_than_the_interval(model, tiny_beir_dir):
    dataset = load_beir(tiny_beir_dir)
    run = retrieve(model, dataset, ["dense", "dense+mcls"], small_config(mcls_interval=256), depth=10)
    np.testing.assert_array_equal(run.rankings["dense+mcls"].indices, run.rankings["dense"].indices)
    np.testing.assert_array_equal(run.rankings["dense+mcls"].scores, run.rankings["dense"].scores)
    assert "dense+mcls" not in DEFAULT_MODES


def test_dense_mcls_passage_vectors_equal_a_naive_mcls_call(model, tiny_beir_dir):
    long_texts = [" ".join(builtin_docstrings()[i : i + 10]) for i in range(0, 50, 10)]
    cfg = RetrievalConfig(batch_size=2, passage_max_len=128, mcls_interval=16, passage_prefix="passage: ")
    index = index_corpus(model, long_texts, {"mcls"}, cfg, vocab=len(model.tokenizer))
    tok = model.tokenizer
    for row, text in enumerate(long_texts):
        ids = tok("passage: " + text, truncation=True, max_length=128)["input_ids"]
        new, inserted = insert_cls_tokens(ids, 16, tok.cls_token_id, tok.eos_token_id, 128)
        assert sum(inserted) >= 4  # really a long text
        x = torch.tensor([new])
        with torch.no_grad():
            want = mcls_forward(
                model, x, torch.ones_like(x), torch.tensor([inserted]), sparse=False, colbert=False
            )
        np.testing.assert_allclose(index.mcls.vectors[row], want.dense[0].numpy(), atol=1e-5)
    # the mode ranks by query (plain CLS) . passage (MCLS)
    dataset = load_beir(tiny_beir_dir)
    dataset.corpus_texts, dataset.corpus_ids = long_texts, [f"L{i}" for i in range(len(long_texts))]
    run = retrieve(model, dataset, ["dense+mcls"], cfg, depth=3)
    queries = encode_texts(model, dataset.query_texts, max_length=cfg.query_max_len).dense
    scores = queries @ index.mcls.vectors.T
    np.testing.assert_allclose(run.rankings["dense+mcls"].scores, -np.sort(-scores, axis=1)[:, :3], atol=1e-5)
