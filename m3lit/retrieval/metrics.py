"""Retrieval metrics (nDCG@k, Recall@k, MRR@k) computed with ``torchmetrics.retrieval``.

Conventions (those of trec_eval / pytrec_eval and BEIR, cross-checked against pytrec_eval in
``tests/unit/retrieval/test_metrics.py``):

- Graded relevance: nDCG uses the qrels grade as a linear gain (trec_eval's ``ndcg_cut``, ranx's
  ``ndcg``); the ideal ranking is built from ALL judged documents, retrieved or not. A grade <= 0 is
  non-relevant (gain 0). Recall and MRR count a document as relevant when its grade is > 0.
- Recall@k divides by the number of relevant documents in the qrels, retrieved or not.
- Queries without any relevant document are EXCLUDED from the average (their metrics are undefined:
  no ideal DCG, no recall denominator). :func:`evaluate_ranking` reports how many were excluded.
- A ranking list may be shorter than k (sparse, BM25): the missing positions count as non-relevant.

How the torchmetrics inputs are built: for each evaluated query, the ranked list (cut at the largest k)
gets predictions ``n - rank`` (distinct, so ties in the raw scores cannot reorder it, and positive:
torchmetrics' MRR ignores documents whose prediction is <= 0), empty slots up to the largest
k become non-relevant fillers, and the relevant documents that were not retrieved are appended below
them, so they enter the ideal DCG and the recall denominator but are never "retrieved".

>>> import numpy as np
>>> from m3lit.retrieval.index.ranking import Ranking
>>> r = Ranking(np.array([[5, 2, 9]]), np.array([[3.0, 2.0, 1.0]], np.float32))
>>> out = evaluate_ranking(r, [{2: 1, 7: 1}], ["recall@2", "mrr@10"])
>>> out.values
{'recall@2': 0.5, 'mrr@10': 0.5}
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.retrieval import RetrievalMRR, RetrievalNormalizedDCG, RetrievalRecall

from m3lit.retrieval.index.ranking import Ranking

__all__ = ["DEFAULT_METRICS", "MetricResult", "evaluate_ranking", "parse_metric", "per_query_metric"]

#: The paper's metrics: nDCG@10 (MIRACL, MLDR), Recall@100 (MIRACL aux., MKQA) and MRR@10.
DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10")

_METRICS = {"ndcg": RetrievalNormalizedDCG, "recall": RetrievalRecall, "mrr": RetrievalMRR}
_NAME = re.compile(r"^(ndcg|recall|mrr|qa_recall)@([1-9][0-9]*)$")


def parse_metric(name: str) -> tuple[str, int]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``; raises ValueError for anything else. ``qa_recall@K`` (answer-string
    recall, :mod:`m3lit.retrieval.answers`) parses here but is scored only on datasets with answers."""
    match = _NAME.match(name)
    if not match:
        raise ValueError(
            f"unknown metric {name!r}: expected ndcg@K, recall@K, mrr@K or qa_recall@K with K >= 1"
        )
    return match.group(1), int(match.group(2))


@dataclass
class MetricResult:
    """Metric means and how many queries they average over.

    Attributes:
        values: metric name -> mean over the evaluated queries, in [0, 1].
        num_queries: queries averaged (those with a relevant document).
        num_excluded: queries left out because no judged document is relevant.
    """

    values: dict[str, float]
    num_queries: int
    num_excluded: int


def evaluate_ranking(
    ranking: Ranking, qrels: Sequence[dict[int, int]], metrics: Sequence[str] = DEFAULT_METRICS
) -> MetricResult:
    """Mean metrics of a ranking against graded qrels.

    Args:
        ranking: (Q, k) ranked document rows per query.
        qrels: (Q,) per query, {document row: grade}.
        metrics: names like ``"ndcg@10"``, ``"recall@100"``, ``"mrr@10"``.
    """
    parsed = [_qrels_metric(m) for m in metrics]
    p, g, idx, evaluated = _metric_inputs(ranking, qrels, max(k for _, k in parsed))
    values = {
        name: float(_compute(kind, k, p, g, idx, "mean"))
        for name, (kind, k) in zip(metrics, parsed, strict=True)
    }
    return MetricResult(values=values, num_queries=evaluated.size, num_excluded=len(qrels) - evaluated.size)


def per_query_metric(
    ranking: Ranking, qrels: Sequence[dict[int, int]], metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """One metric per evaluated query (the values :func:`evaluate_ranking` averages).

    Returns:
        rows: (E,) int64 query rows that have a relevant document, ascending.
        values: (E,) float64 metric of each, in [0, 1].
    """
    kind, k = _qrels_metric(metric)
    p, g, idx, evaluated = _metric_inputs(ranking, qrels, k)
    return evaluated, _compute(kind, k, p, g, idx, lambda values, dim: values).double().numpy()


def _qrels_metric(name: str) -> tuple[str, int]:
    """:func:`parse_metric` for the metrics qrels give (nDCG, recall, MRR)."""
    kind, k = parse_metric(name)
    if kind == "qa_recall":
        raise ValueError(
            f"metric {name!r} needs answer strings (an answers/<split>.jsonl dataset), not qrels"
        )
    return kind, k


def _metric_inputs(
    ranking: Ranking, qrels: Sequence[dict[int, int]], depth: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """torchmetrics inputs (see the module docstring): flat predictions, gains and query indexes of the
    queries with a relevant document, and those queries' rows (E,)."""
    if ranking.num_queries != len(qrels):
        raise ValueError(
            f"evaluate_ranking: {ranking.num_queries} ranked lists for {len(qrels)} qrels entries"
        )
    preds, grades, query, rows = [], [], [], []
    for q, judged in enumerate(qrels):
        relevant = {d: g for d, g in judged.items() if g > 0}
        if not relevant:
            continue
        docs, _ = ranking.row(q)
        docs = docs[:depth]
        ranked = np.array([relevant.get(int(d), 0) for d in docs], np.int64)
        retrieved = set(docs.tolist())
        missing = np.array([g for d, g in relevant.items() if d not in retrieved], np.int64)
        filler = np.zeros(depth - docs.size, np.int64)
        gains = np.concatenate([ranked, filler, missing])  # (depth + n_missing,) in rank order
        preds.append(np.arange(gains.size, 0, -1, dtype=np.float32))  # rank r -> n - r > 0 (see docstring)
        grades.append(gains)
        query.append(np.full(gains.size, len(rows), np.int64))
        rows.append(q)
    if not rows:
        raise ValueError("evaluate_ranking: no query has a relevant document; the metrics are undefined")
    p = torch.from_numpy(np.concatenate(preds))
    g = torch.from_numpy(np.concatenate(grades))
    return p, g, torch.from_numpy(np.concatenate(query)), np.array(rows, np.int64)


def _compute(
    kind: str, k: int, p: torch.Tensor, g: torch.Tensor, idx: torch.Tensor, aggregation
) -> torch.Tensor:
    """One torchmetrics retrieval metric over all queries: their ``aggregation`` ("mean" or a callable)."""
    with _one_thread():  # thousands of tiny per-query ops: intra-op threads only add overhead
        # sync_on_compute=False: the values are complete on this process. Under DDP, torchmetrics would
        # otherwise all-gather across ranks, and deadlock while only rank 0 evaluates (RetrievalMetrics).
        metric = _METRICS[kind](
            top_k=k, empty_target_action="error", sync_on_compute=False, aggregation=aggregation
        )
        metric.update(p, g if kind == "ndcg" else (g > 0), indexes=idx)
        return metric.compute()


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch single-threaded for the block, then restore the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
