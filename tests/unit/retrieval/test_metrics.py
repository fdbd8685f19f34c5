"""Retrieval metrics (torchmetrics) against an independent implementation: pytrec_eval (trec_eval's C code).

ranx would be a second reference, but its numba kernels take ~2 minutes to compile on a 2-core machine,
more than this whole file may cost; pytrec_eval covers every metric and cut-off used here.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytrec_eval

from m3lit.retrieval import Ranking, evaluate_ranking, parse_metric

METRICS = ["ndcg@10", "ndcg@3", "recall@100", "recall@7", "mrr@10"]


def trec_means(ranking: Ranking, qrels: list[dict[int, int]], metrics: list[str]) -> dict[str, float]:
    """Mean of pytrec_eval's per-query values over the queries that have a relevant document."""
    qrels_t = {f"q{q}": {f"d{d}": g for d, g in judged.items()} for q, judged in enumerate(qrels)}
    cutoffs: dict[str, set[int]] = {"ndcg": set(), "recall": set()}
    for name in metrics:
        kind, k = parse_metric(name)
        if kind != "mrr":
            cutoffs[kind].add(k)
    measures = {
        f"ndcg_cut.{','.join(map(str, sorted(cutoffs['ndcg'])))}",
        f"recall.{','.join(map(str, sorted(cutoffs['recall'])))}",
    }
    full_run, runs_at = {}, {}
    for q in range(ranking.num_queries):
        docs, _ = ranking.row(q)
        # distinct decreasing scores: trec_eval's order is then exactly the ranking's
        full_run[f"q{q}"] = {f"d{d}": float(len(docs) - r) for r, d in enumerate(docs)}
    per_query = pytrec_eval.RelevanceEvaluator(qrels_t, measures).evaluate(full_run)
    for name in metrics:
        kind, k = parse_metric(name)
        if kind == "mrr":  # MRR@k = trec_eval's recip_rank on the list cut at k
            runs_at[name] = pytrec_eval.RelevanceEvaluator(qrels_t, {"recip_rank"}).evaluate(
                {q: dict(list(run.items())[:k]) for q, run in full_run.items()}
            )
    evaluated = [q for q, judged in enumerate(qrels) if any(g > 0 for g in judged.values())]
    out = {}
    for name in metrics:
        kind, k = parse_metric(name)
        if kind == "mrr":
            values = [runs_at[name][f"q{q}"]["recip_rank"] for q in evaluated]
        else:
            key = f"ndcg_cut_{k}" if kind == "ndcg" else f"recall_{k}"
            values = [per_query[f"q{q}"][key] for q in evaluated]
        out[name] = float(np.mean(values))
    return out


def padded(rows: list[list[int]]) -> Ranking:
    width = max(len(r) for r in rows)
    idx = np.full((len(rows), width), -1, np.int64)
    scores = np.full((len(rows), width), -np.inf, np.float32)
    for q, r in enumerate(rows):
        idx[q, : len(r)] = r
        scores[q, : len(r)] = np.arange(len(r), 0, -1)
    return Ranking(idx, scores)


def test_hand_made_rankings_with_graded_qrels_match_pytrec_eval():
    rows = [
        [3, 1, 7, 2],  # graded hits at ranks 2 and 4, a grade-3 document (9) never retrieved
        [5],  # a one-document list, far shorter than every cut-off
        [1, 2, 3],  # its only relevant document (4) is not retrieved: all zeros
        list(range(100, 112)) + [8],  # first relevant at rank 13: MRR@10 = 0, Recall@100 counts it
        [0, 6, 4],  # grade-0 judgements only: no relevant document
        [6, 0, 9, 4, 5, 2, 11, 12],  # many grades, one relevant document at rank 8 (> 7)
    ]
    qrels = [
        {1: 2, 2: 1, 9: 3, 3: 0},
        {5: 1},
        {4: 1},
        {8: 2, 100: 0},
        {0: 0, 6: 0},
        {6: 1, 9: 3, 5: 2, 12: 1, 77: 2},
    ]
    ranking = padded(rows)
    got = evaluate_ranking(ranking, qrels, METRICS)
    expected = trec_means(ranking, qrels, METRICS)
    assert got.values == pytest.approx(expected, abs=1e-6)
    assert (got.num_queries, got.num_excluded) == (5, 1)
    # spot values from the formulas: query 1 alone
    one = evaluate_ranking(padded([rows[0]]), [qrels[0]], ["ndcg@10", "recall@100", "mrr@10"]).values
    dcg = 2 / np.log2(3) + 1 / np.log2(5)
    idcg = 3 + 2 / np.log2(3) + 1 / np.log2(4)
    assert one == pytest.approx({"ndcg@10": dcg / idcg, "recall@100": 2 / 3, "mrr@10": 0.5})


def test_queries_without_relevant_documents_are_excluded_from_the_average():
    base = evaluate_ranking(padded([[1, 2], [3]]), [{2: 1}, {3: 2}], METRICS)
    with_empty = evaluate_ranking(padded([[1, 2], [3], [4, 5]]), [{2: 1}, {3: 2}, {4: 0, 5: 0}], METRICS)
    assert with_empty.values == base.values
    assert (with_empty.num_queries, with_empty.num_excluded) == (2, 1)
    with pytest.raises(ValueError, match="no query has a relevant document"):
        evaluate_ranking(padded([[1]]), [{1: 0}], METRICS)


def test_random_rankings_match_pytrec_eval():
    rng = np.random.default_rng(0)
    rows, qrels = [], []
    for _ in range(25):
        rows.append(rng.permutation(300)[: int(rng.integers(1, 150))].tolist())
        judged = rng.choice(300, size=int(rng.integers(1, 20)), replace=False)
        qrels.append({int(d): int(g) for d, g in zip(judged, rng.integers(0, 4, judged.size), strict=True)})
    ranking = padded(rows)
    got = evaluate_ranking(ranking, qrels, METRICS)
    assert got.values == pytest.approx(trec_means(ranking, qrels, METRICS), abs=1e-6)


def test_tied_raw_scores_keep_the_ranking_order():
    tied = Ranking(np.array([[4, 2, 9]]), np.zeros((1, 3), np.float32))  # every raw score 0
    got = evaluate_ranking(tied, [{9: 1}], ["mrr@10"]).values
    assert got == {"mrr@10": pytest.approx(1 / 3)}


def test_metric_names_are_validated():
    assert parse_metric("recall@20") == ("recall", 20)
    for bad in ("ndcg", "map@10", "ndcg@0", "recall@x"):
        with pytest.raises(ValueError, match="unknown metric"):
            parse_metric(bad)
