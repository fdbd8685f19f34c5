"""End-to-end retrieval on a tiny random model: every mode equals brute-force scoring of every pair.

The reference encodes each text alone with ``M3Model.forward`` (no padding, no batching, no sorting) and
scores every (query, document) pair with the formulas of BGE-M3 §3.2 written out in numpy; BM25 with
Lucene's formula. Batched encoding with padding changes the float32 outputs by ~1e-6, so a ranking is
checked by its scores: the reported scores must equal the reference scores of those documents, and
must be the reference's k best values (equal documents may only swap within near-ties).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from m3lit.model import M3Model, special_token_ids
from m3lit.retrieval import (
    MODES,
    Ranking,
    RetrievalConfig,
    evaluate_retrieval,
    load_beir,
    retrieve,
)

MAX_LEN = 64
ATOL = 2e-4


def reference_reps(model: M3Model, texts: list[str]) -> list[dict]:
    model.eval()
    reps = []
    for text in texts:
        ids = model.tokenizer(text, truncation=True, max_length=MAX_LEN)["input_ids"]
        x = torch.tensor([ids])
        with torch.no_grad():
            out = model(x, torch.ones_like(x))
        lexical: dict[int, float] = {}
        for token, w in zip(ids, out.sparse_weights[0].tolist(), strict=True):
            if w > 0:
                lexical[token] = max(lexical.get(token, 0.0), w)
        reps.append(
            {
                "dense": out.dense[0].double().numpy(),
                "sparse": lexical,
                "colbert": out.colbert[0].double().numpy(),
            }
        )
    return reps


def reference_scores(model: M3Model, dataset) -> dict[str, np.ndarray]:
    q, d = reference_reps(model, dataset.query_texts), reference_reps(model, dataset.corpus_texts)
    dense = np.array([[a["dense"] @ b["dense"] for b in d] for a in q])
    sparse = np.array(
        [[sum(w * b["sparse"].get(t, 0.0) for t, w in a["sparse"].items()) for b in d] for a in q]
    )
    colbert = np.array(
        [[np.mean([(qi @ b["colbert"].T).max() for qi in a["colbert"]]) for b in d] for a in q]
    )
    return {"dense": dense, "sparse": sparse, "colbert": colbert, "bm25": reference_bm25(model, dataset)}


def reference_bm25(model: M3Model, dataset, k1: float = 0.9, b: float = 0.4) -> np.ndarray:
    drop = set(special_token_ids(model.tokenizer))
    tok = [
        [t for t in model.tokenizer(x, add_special_tokens=False)["input_ids"] if t not in drop]
        for x in dataset.corpus_texts
    ]
    queries = [
        [t for t in model.tokenizer(x, add_special_tokens=False)["input_ids"] if t not in drop]
        for x in dataset.query_texts
    ]
    n, avgdl = len(tok), np.mean([len(t) for t in tok])
    df: dict[int, int] = {}
    for doc in tok:
        for t in set(doc):
            df[t] = df.get(t, 0) + 1
    out = np.zeros((len(queries), n))
    for qi, query in enumerate(queries):
        for di, doc in enumerate(tok):
            for t in query:
                tf = doc.count(t)
                if tf:
                    idf = np.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                    out[qi, di] += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
    return out


def check_topk(got: Ranking, ref: np.ndarray, k: int, keep: np.ndarray | None = None) -> None:
    for q in range(ref.shape[0]):
        docs, vals = got.row(q)
        allowed = np.ones(ref.shape[1], bool) if keep is None else keep[q]
        best = np.sort(ref[q][allowed])[::-1][:k]
        assert docs.size == best.size, f"query {q}: {docs.size} results, expected {best.size}"
        assert allowed[docs].all()
        np.testing.assert_allclose(vals, ref[q, docs], atol=ATOL, err_msg=f"query {q}: reported scores")
        np.testing.assert_allclose(vals, best, atol=ATOL, err_msg=f"query {q}: not the top-{k}")


@pytest.fixture(scope="module")
def model_and_data(tiny_config, tokenizer, tiny_beir_dir):
    torch.manual_seed(0)
    model = M3Model.from_config(tiny_config, tokenizer, colbert_dim=16).eval()
    with torch.no_grad():  # a random sparse bias near 0 would leave most weights at ReLU's 0
        model.sparse_head.linear.bias.fill_(0.5)
    dataset = load_beir(tiny_beir_dir)
    return model, dataset, reference_scores(model, dataset)


def small_config(**kw) -> RetrievalConfig:
    return RetrievalConfig(batch_size=8, query_max_len=MAX_LEN, passage_max_len=MAX_LEN, **kw)


def test_every_mode_equals_brute_force_over_all_pairs(model_and_data):
    model, dataset, ref = model_and_data
    n = len(dataset.corpus_texts)
    w_hd, w_hs = 0.4, 0.6
    w_all = (0.5, 0.2, 0.3)
    cfg = small_config(
        colbert_rerank_k=n,
        hybrid_k=n,
        all_rerank_k=n,
        hybrid_weights=(w_hd, w_hs),
        all_weights=w_all,
        shard_size=15,
    )
    run = retrieve(model, dataset, MODES, cfg, depth=10)
    assert list(run.rankings) == list(MODES)
    assert (ref["sparse"] > 0).sum() > 20  # the lexical mode has something to rank
    check_topk(run.rankings["dense"], ref["dense"], 10)
    check_topk(run.rankings["sparse"], ref["sparse"], 10, keep=ref["sparse"] > 0)
    check_topk(run.rankings["colbert"], ref["colbert"], 10)
    check_topk(run.rankings["dense+sparse"], w_hd * ref["dense"] + w_hs * ref["sparse"], 10)
    fused = w_all[0] * ref["dense"] + w_all[1] * ref["sparse"] + w_all[2] * ref["colbert"]
    check_topk(run.rankings["all"], fused, 10)
    check_topk(run.rankings["bm25"], ref["bm25"], 10, keep=ref["bm25"] > 0)
    assert run.info["colbert_store"] == "memory" and run.info["colbert_stored_docs"] == n


def test_rerank_modes_restrict_to_the_dense_candidates_and_reencode_matches_memory(model_and_data):
    model, dataset, ref = model_and_data
    r = 6
    fused = ref["dense"] + 0.3 * ref["sparse"] + ref["colbert"]  # default All weights (1, 0.3, 1)
    runs = {}
    for store in ("memory", "reencode"):
        cfg = small_config(colbert_rerank_k=r, all_rerank_k=r, hybrid_k=3, colbert_store=store, shard_size=7)
        runs[store] = retrieve(model, dataset, ["dense", "colbert", "all", "dense+sparse"], cfg, depth=10)
        # the candidates: the dense top-r (checked against brute force above; near-ties may swap)
        dense_top = runs[store].rankings["dense"].indices[:, :r]
        check_topk(runs[store].rankings["dense"], ref["dense"], 10)
        keep = np.zeros_like(ref["dense"], bool)
        np.put_along_axis(keep, dense_top, True, axis=1)
        check_topk(runs[store].rankings["colbert"], ref["colbert"], r, keep=keep)
        check_topk(runs[store].rankings["all"], fused, r, keep=keep)
    assert runs["reencode"].info["colbert_store"] == "reencode"
    assert runs["reencode"].info["colbert_stored_docs"] == int(keep.any(0).sum()) < len(dataset.corpus_texts)
    for mode in ("colbert", "all", "dense+sparse"):
        np.testing.assert_array_equal(
            runs["memory"].rankings[mode].indices, runs["reencode"].rankings[mode].indices
        )
    # Dense+Sparse with depth 3: the union of the two top-3 lists, re-scored exactly
    got, dense = runs["memory"].rankings["dense+sparse"], runs["memory"].rankings["dense"]
    hybrid = 1.0 * ref["dense"] + 0.3 * ref["sparse"]  # default Dense+Sparse weights (1, 0.3)
    sparse_top = [
        set(np.flatnonzero(row > 0)[np.argsort(-row[row > 0], kind="stable")][:3].tolist())
        for row in ref["sparse"]
    ]
    for q in range(hybrid.shape[0]):
        union = set(dense.indices[q, :3].tolist()) | sparse_top[q]
        docs, vals = got.row(q)
        assert set(docs.tolist()) == union
        np.testing.assert_allclose(vals, np.sort(hybrid[q, sorted(union)])[::-1], atol=ATOL)


def test_evaluate_retrieval_equals_pytrec_eval_on_the_retrieved_lists(model_and_data, tiny_beir_dir):
    import pytrec_eval

    model, dataset, ref = model_and_data
    cfg = small_config()
    results = evaluate_retrieval(model, tiny_beir_dir, modes=["dense", "bm25"], config=cfg)
    assert set(results) == {"dense", "bm25"}
    run = retrieve(model, dataset, ["dense", "bm25"], cfg, depth=100)
    check_topk(run.rankings["dense"], ref["dense"], 100)
    check_topk(run.rankings["bm25"], ref["bm25"], 100, keep=ref["bm25"] > 0)
    # qrels read straight from the file, by string id: checks the id <-> row mapping end to end
    lines = (tiny_beir_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]
    qrels: dict[str, dict[str, int]] = {}
    for line in lines:
        qid, did, grade = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(grade)
    relevant = [q for q, judged in qrels.items() if any(g > 0 for g in judged.values())]
    assert len(relevant) == len(qrels) - 1  # q_none is excluded from the averages
    for mode in ("dense", "bm25"):
        ranking = run.rankings[mode]
        trec_run = {}
        for q, qid in enumerate(dataset.query_ids):
            docs, _ = ranking.row(q)
            trec_run[qid] = {dataset.corpus_ids[d]: float(100 - r) for r, d in enumerate(docs)}
        top10 = {qid: dict(list(docs.items())[:10]) for qid, docs in trec_run.items()}
        full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(trec_run)
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
        expected = {
            "ndcg@10": np.mean([full[q]["ndcg_cut_10"] for q in relevant]),
            "recall@100": np.mean([full[q]["recall_100"] for q in relevant]),
            "mrr@10": np.mean([rr[q]["recip_rank"] for q in relevant]),
        }
        assert results[mode] == pytest.approx(expected, abs=1e-6)
        assert all(0.0 <= v <= 1.0 for v in results[mode].values())


def test_model_without_heads_is_evaluated_dense_only_with_a_loud_warning(model_and_data, tmp_path, caplog):
    model, dataset, _ = model_and_data
    model.save_pretrained(tmp_path / "export")
    (tmp_path / "export" / "colbert_linear.pt").unlink()
    loaded = M3Model.from_pretrained(tmp_path / "export")
    assert not loaded.heads_loaded
    with caplog.at_level(logging.WARNING):
        results = evaluate_retrieval(loaded, dataset, config=small_config())
    assert set(results) == {"dense", "bm25"}
    assert any("DENSE ONLY" in r.getMessage() and "colbert" in r.getMessage() for r in caplog.records)


def test_unknown_mode_is_rejected(model_and_data):
    model, dataset, _ = model_and_data
    with pytest.raises(ValueError, match=r"unknown retrieval mode\(s\) \['hybrid'\]"):
        evaluate_retrieval(model, dataset, modes=["dense", "hybrid"], config=small_config())


def test_hybrid_all_reranks_the_union_of_dense_and_sparse_candidates(model_and_data):
    """all_candidates="hybrid": All re-ranks the union of the dense and the sparse top-r (not only dense)."""
    model, dataset, ref = model_and_data
    r = 4
    fused = ref["dense"] + 0.3 * ref["sparse"] + ref["colbert"]  # default All weights (1, 0.3, 1)
    runs = {}
    for store in ("memory", "reencode"):
        cfg = small_config(all_rerank_k=r, all_candidates="hybrid", colbert_store=store, shard_size=7)
        runs[store] = retrieve(model, dataset, ["dense", "sparse", "all"], cfg, depth=10)
        dense, sparse = runs[store].rankings["dense"], runs[store].rankings["sparse"]
        check_topk(dense, ref["dense"], 10)
        check_topk(sparse, ref["sparse"], 10, keep=ref["sparse"] > 0)
        keep = np.zeros_like(ref["dense"], bool)
        for ranking in (dense, sparse):
            top = ranking.indices[:, :r]
            rows = np.nonzero(top >= 0)
            keep[rows[0], top[rows]] = True
        check_topk(runs[store].rankings["all"], fused, 2 * r, keep=keep)
    # some query gains a candidate only the lexical head found, so the option changes what All can rank
    dense_only = runs["memory"].rankings["dense"].indices[:, :r]
    assert any(
        set(np.flatnonzero(row)) - set(top) for row, top in zip(keep, dense_only.tolist(), strict=True)
    )
    np.testing.assert_array_equal(
        runs["memory"].rankings["all"].indices, runs["reencode"].rankings["all"].indices
    )
    with pytest.raises(ValueError, match="all_candidates must be one of"):
        small_config(all_candidates="sparse")
