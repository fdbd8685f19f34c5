"""Answer-string recall: a hit when a retrieved passage contains an answer (the paper's MKQA metric).

BGE-M3 reports MKQA as Recall@100 and Recall@20 (arXiv:2402.03216 §4.1, Table 2) with RocketQA's
definition (Qu et al., NAACL 2021): a query scores 1 at cut-off k when any of its top-k passages contains
one of its answer strings, else 0, and the mean runs over ALL queries (a query no passage answers counts
0). Containment is token-level: text and answer are Unicode-NFD-normalised, lower-cased and split into
tokens (a run of letters, digits and combining marks, or any other single visible character), and the
answer's tokens must appear contiguously in the passage's.

A dataset with answers instead of qrels (:attr:`RetrievalDataset.answers`, read from
``answers/<split>.jsonl``) is scored with the metric ``qa_recall@K``; :func:`score_dataset` and
:func:`per_query_values` pick the right scorer for any dataset, so the evaluation, the reports and the
significance tests go through one door.

>>> answer_tokens("Zürich, 1291") == ["zu\u0308rich", ",", "1291"]
True
>>> contains(answer_tokens("Founded in ZÜRICH in 1291."), [answer_tokens("zürich")])
True
>>> contains(answer_tokens("in 12910"), [answer_tokens("1291")])  # tokens, not substrings
False
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np
import regex

from m3lit.retrieval.beir import RetrievalDataset
from m3lit.retrieval.index.ranking import Ranking
from m3lit.retrieval.metrics import MetricResult, evaluate_ranking, parse_metric, per_query_metric

__all__ = ["answer_tokens", "contains", "first_answer_ranks", "per_query_values", "score_dataset"]

_TOKEN = regex.compile(r"[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]", flags=regex.UNICODE)


def answer_tokens(text: str) -> list[str]:
    """The lower-cased tokens of ``text`` after NFD normalisation (see the module docstring)."""
    return [token.lower() for token in _TOKEN.findall(unicodedata.normalize("NFD", text))]


def contains(passage: Sequence[str], answers: Sequence[Sequence[str]]) -> bool:
    """Whether any tokenised answer occurs as a contiguous run of the tokenised ``passage``."""
    for answer in answers:
        n = len(answer)
        if n and any(list(passage[i : i + n]) == list(answer) for i in range(len(passage) - n + 1)):
            return True
    return False


def first_answer_ranks(ranking: Ranking, dataset: RetrievalDataset, depth: int) -> np.ndarray:
    """(Q,) int64: the 0-based rank of each query's first answer-holding passage in its top ``depth``,
    or ``depth`` when none holds an answer. Each retrieved passage is tokenised once."""
    if dataset.answers is None:
        raise ValueError(f"{dataset.name}: no answers (qa_recall needs an answers/<split>.jsonl dataset)")
    tokens: dict[int, list[str]] = {}
    ranks = np.full(ranking.num_queries, depth, np.int64)
    for q, answers in enumerate(dataset.answers):
        wanted = [answer_tokens(a) for a in answers]
        docs, _ = ranking.row(q)
        for rank, doc in enumerate(docs[:depth].tolist()):
            if doc < 0:
                break
            if doc not in tokens:
                tokens[doc] = answer_tokens(dataset.corpus_texts[doc])
            if contains(tokens[doc], wanted):
                ranks[q] = rank
                break
    return ranks


def score_dataset(ranking: Ranking, dataset: RetrievalDataset, metrics: Sequence[str]) -> MetricResult:
    """Mean ``metrics`` of a (Q, k) ranking: qrels metrics (:func:`~m3lit.retrieval.metrics.evaluate_ranking`)
    for a dataset with qrels, ``qa_recall@K`` for one with answers.

    Raises:
        ValueError: a metric the dataset cannot give (qa_recall without answers, nDCG/recall/MRR without qrels).
    """
    if dataset.answers is None:
        return evaluate_ranking(ranking, dataset.qrels, metrics)
    parsed = [_answer_metric(dataset, m) for m in metrics]
    ranks = first_answer_ranks(ranking, dataset, max(parsed))
    values = {m: float(np.mean(ranks < k)) for m, k in zip(metrics, parsed, strict=True)}
    return MetricResult(values=values, num_queries=len(ranks), num_excluded=0)


def per_query_values(ranking: Ranking, dataset: RetrievalDataset, metric: str) -> np.ndarray:
    """(E,) float64: ``metric`` of each evaluated query (the values :func:`score_dataset` averages); for an
    answers dataset every query is evaluated and scores 0 or 1."""
    if dataset.answers is None:
        return per_query_metric(ranking, dataset.qrels, metric)[1]
    k = _answer_metric(dataset, metric)
    return (first_answer_ranks(ranking, dataset, k) < k).astype(np.float64)


def _answer_metric(dataset: RetrievalDataset, metric: str) -> int:
    """K of ``qa_recall@K``; a ValueError for any other metric on an answers dataset."""
    kind, k = parse_metric(metric)
    if kind != "qa_recall":
        raise ValueError(
            f"{dataset.name}: metric {metric!r} needs qrels; this dataset has answer strings, so its "
            "metrics are qa_recall@K (a hit when a top-K passage contains an answer)"
        )
    return k
