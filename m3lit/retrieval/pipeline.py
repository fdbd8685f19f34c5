"""End-to-end retrieval evaluation: encode, index, search in the five modes (+ Dense+MCLS, BM25), score.

The modes are the rows of the paper's tables (BGE-M3, arXiv:2402.03216 §4, Tables 1-5):

================  ================================================================================
``dense``         exact top-k by s_dense over the corpus (:class:`DenseIndex`)
``sparse``        exact top-k by s_lex over an inverted index (:class:`SparseIndex`)
``colbert``       "Multi-vec": the dense top-``colbert_rerank_k`` re-ranked by MaxSim
``dense+sparse``  union of the dense and sparse top-``hybrid_k`` lists, re-scored w_d s_dense + w_s s_lex
``all``           the dense top-``all_rerank_k`` re-ranked by w_d s_dense + w_s s_lex + w_c s_mul; with
                  ``all_candidates="hybrid"``, the union of the dense and sparse top-``all_rerank_k``
``dense+mcls``    exact dense top-k, passages encoded with a CLS every ``mcls_interval`` tokens (App. B.2,
                  Table 5 "Dense+MCLS"; queries encoded normally). Opt-in: not in :data:`DEFAULT_MODES`
``bm25``          BM25 with the model's tokenizer (reference row; needs no trained weights, no prefixes)
================  ================================================================================

BEIR convention (``ignore_identical_ids``, on by default): a retrieved document whose id equals the
query's id is dropped from that query's list before scoring (datasets such as ArguAna or Quora hold the
query itself in the corpus). One extra candidate is retrieved so each list keeps ``depth`` entries.

``pooling="mean"`` (released baselines such as multilingual-e5) defines the dense vector only: it allows
the ``dense`` and ``bm25`` modes, and any other mode is a ValueError.

One evaluation reads in order: plan (:func:`m3lit.retrieval.modes.plan_retrieval`: representations and list
lengths), load (:func:`m3lit.retrieval.beir.load_beir`), encode, index and rank
(:func:`m3lit.retrieval.index.search.run_plan`: the corpus is encoded shard by shard into the indices, queries
once; MaxSim scores of the dense top candidates are computed once and shared by ``colbert`` and ``all``), and
score (:func:`score_rankings`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from m3lit.model import M3Model
from m3lit.retrieval.answers import score_dataset
from m3lit.retrieval.beir import RetrievalDataset, load_beir
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.index.ranking import Ranking
from m3lit.retrieval.index.search import RetrievalRun, run_plan
from m3lit.retrieval.metrics import DEFAULT_METRICS, parse_metric
from m3lit.retrieval.modes import (
    DEFAULT_MODES,
    MODEL_MODES,
    MODES,
    plan_retrieval,
    retrieval_depth,
    usable_modes,
)
from m3lit.retrieval.trec import write_trec_runs

__all__ = [
    "DEFAULT_MODES",
    "MODES",
    "MODEL_MODES",
    "RetrievalRun",
    "drop_identical_ids",
    "evaluate_retrieval",
    "retrieval_depth",
    "retrieve",
    "run_plan",
    "score_rankings",
    "usable_modes",
]

log = logging.getLogger(__name__)


def retrieve(
    model: M3Model,
    dataset: RetrievalDataset,
    modes: Sequence[str] = DEFAULT_MODES,
    config: RetrievalConfig | None = None,
    *,
    depth: int = 100,
    device=None,
    progress: bool = False,
    corpus_cache: dict | None = None,
) -> RetrievalRun:
    """Rank the corpus for every query of ``dataset`` in each mode (see the module docstring).

    Plan (:func:`m3lit.retrieval.modes.plan_retrieval`), then :func:`run_plan`.

    Args:
        model: the M3 model (its training flag is restored afterwards by ``encode_texts``).
        dataset: a loaded BEIR-style dataset.
        modes: subset of :data:`MODES`; modes needing untrained heads must be filtered by the caller
            (:func:`usable_modes`).
        config: retrieval settings (defaults: the paper's).
        depth: length of the returned lists (the largest metric cut-off).
        device: where to encode (None = the model's device).
        progress: progress bars.
        corpus_cache: a dict kept by the caller across calls with the SAME model: an encoded corpus is
            reused when a later dataset has the same corpus texts and passage settings (e.g. every
            language of a task that searches one shared corpus, or two tasks on one corpus). It holds the
            last :data:`~m3lit.retrieval.index.search.CORPUS_CACHE_ENTRIES` corpora used.
    """
    plan = plan_retrieval(modes, config or RetrievalConfig(), depth)
    return run_plan(model, dataset, plan, device=device, progress=progress, corpus_cache=corpus_cache)


def evaluate_retrieval(
    model: M3Model,
    dataset_dir: str | Path | RetrievalDataset,
    *,
    split: str = "test",
    modes: Sequence[str] = DEFAULT_MODES,
    metrics: Sequence[str] = DEFAULT_METRICS,
    config: RetrievalConfig | dict | None = None,
    device=None,
    progress: bool = False,
    unknown_qrels: str = "error",
    ignore_identical_ids: bool = True,
    runs_dir: str | Path | None = None,
    corpus_cache: dict | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate ``model`` on a BEIR-layout dataset: mode -> metric -> value in [0, 1].

    Args:
        model: the M3 model. Without trained heads (``heads_loaded`` False) only dense and BM25 are
            evaluated, with a loud warning; the other modes are absent from the result, never zeros.
        dataset_dir: the dataset folder, or an already loaded :class:`RetrievalDataset`.
        split: qrels split (``qrels/<split>.tsv``).
        modes: any of :data:`MODES`.
        metrics: ``ndcg@K``, ``recall@K``, ``mrr@K`` names (default nDCG@10, Recall@100, MRR@10).
        config: :class:`RetrievalConfig` or a dict of its fields.
        device: where to encode (None = the model's device).
        progress: progress bars.
        unknown_qrels: ``"error"`` or ``"skip"`` (counted) for qrels rows naming unknown ids.
        ignore_identical_ids: drop a retrieved document whose id equals the query's id before scoring
            (BEIR convention; :func:`drop_identical_ids`).
        runs_dir: when given, the scored lists are written there as TREC run files ``<mode>.trec``
            (:mod:`m3lit.retrieval.trec`).
        corpus_cache: reuse the corpus encoding across calls with the same model (:func:`retrieve`).

    Queries without a relevant document are excluded from every average (trec_eval/BEIR convention;
    see :mod:`m3lit.retrieval.metrics`).
    """
    cfg = RetrievalConfig.from_mapping(config)
    plan = plan_retrieval(usable_modes(model, modes), cfg, retrieval_depth(metrics, ignore_identical_ids))
    dataset = (
        dataset_dir
        if isinstance(dataset_dir, RetrievalDataset)
        else load_beir(dataset_dir, split, unknown_qrels=unknown_qrels)
    )
    run = run_plan(model, dataset, plan, device=device, progress=progress, corpus_cache=corpus_cache)
    return score_rankings(
        run.rankings, dataset, metrics, ignore_identical_ids=ignore_identical_ids, runs_dir=runs_dir
    )


def score_rankings(
    rankings: dict[str, Ranking],
    dataset: RetrievalDataset,
    metrics: Sequence[str],
    *,
    ignore_identical_ids: bool = True,
    runs_dir: str | Path | None = None,
) -> dict[str, dict[str, float]]:
    """Score the (Q, k) ``rankings`` of :func:`retrieve` (k from :func:`retrieval_depth`): mode -> metric ->
    value in [0, 1]; the arguments as :func:`evaluate_retrieval`'s."""
    depth = max(parse_metric(m)[1] for m in metrics)
    rankings = {
        mode: drop_identical_ids(r, dataset, depth) if ignore_identical_ids else r.truncate(depth)
        for mode, r in rankings.items()
    }
    if runs_dir is not None:
        write_trec_runs(runs_dir, rankings, dataset)
    results = {}
    for mode, ranking in rankings.items():
        scored = score_dataset(ranking, dataset, metrics)
        results[mode] = scored.values
    excluded = len(dataset.qrels) - dataset.num_relevant_queries
    if excluded:
        log.info(
            "%s: %d of %d queries have no relevant document and are excluded from the averages",
            dataset.name,
            excluded,
            len(dataset.qrels),
        )
    return results


def drop_identical_ids(ranking: Ranking, dataset: RetrievalDataset, depth: int) -> Ranking:
    """Remove from each query's list the document whose id equals the query's id; keep ``depth`` entries.

    BEIR's ``ignore_identical_ids``. The other documents keep their order; a list that lost an entry is
    padded (-1 / -inf) when it had no spare one.

    Args:
        ranking: (Q, k) lists of corpus rows, rows aligned with ``dataset.query_ids``.
        dataset: the dataset (query and corpus ids).
        depth: width of the returned ranking (at most k).
    """
    doc_rows = {doc_id: row for row, doc_id in enumerate(dataset.corpus_ids)}
    same = np.array([doc_rows.get(qid, -1) for qid in dataset.query_ids], np.int64)  # (Q,) -1 = none
    drop = (ranking.indices == same[:, None]) & (same[:, None] >= 0)  # (Q, k)
    if not drop.any():
        return ranking.truncate(depth)
    order = np.argsort(drop, axis=1, kind="stable")  # kept entries first, in their order
    indices = np.take_along_axis(np.where(drop, -1, ranking.indices), order, 1)
    scores = np.take_along_axis(np.where(drop, -np.inf, ranking.scores).astype(np.float32), order, 1)
    return Ranking(indices, scores).truncate(depth)
