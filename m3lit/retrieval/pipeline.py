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

The corpus is encoded shard by shard into the indices (:mod:`m3lit.retrieval.index.corpus`, where the memory
choices are described); queries are encoded once. MaxSim scores of the dense top candidates are
computed once and shared by ``colbert`` and ``all``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from m3lit.inference.encoding import encode_texts
from m3lit.model import M3Model, special_token_ids
from m3lit.retrieval.beir import RetrievalDataset, load_beir
from m3lit.retrieval.index.bm25 import BM25Index, bm25_tokenize
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.index.corpus import index_corpus, store_candidates, trim_heap
from m3lit.retrieval.index.hybrid import FusionTerms, fuse, union_candidates
from m3lit.retrieval.metrics import DEFAULT_METRICS, evaluate_ranking, parse_metric
from m3lit.retrieval.index.ranking import Ranking
from m3lit.retrieval.index.sparse import sparse_matrix
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
    "score_rankings",
    "usable_modes",
]

log = logging.getLogger(__name__)

#: Every mode, in the paper's column order, then Dense+MCLS (Table 5) and the BM25 reference.
MODES = ("dense", "sparse", "colbert", "dense+sparse", "all", "dense+mcls", "bm25")
#: The five modes that use the model's heads (what the training callback evaluates by default).
MODEL_MODES = MODES[:5]
#: What an evaluation runs unless told otherwise: the five modes and BM25 (Dense+MCLS is opt-in).
DEFAULT_MODES = (*MODEL_MODES, "bm25")
#: The representations each mode needs ("mcls": dense vectors of MCLS-encoded passages).
NEEDS = {
    "dense": {"dense"},
    "sparse": {"sparse"},
    "colbert": {"dense", "colbert"},
    "dense+sparse": {"dense", "sparse"},
    "all": {"dense", "sparse", "colbert"},
    "dense+mcls": {"mcls"},
    "bm25": set(),
}
#: Representations that need no trained head (the encoder's CLS state).
_NO_HEADS = {"dense", "mcls"}
#: Modes that mean pooling allows (the others need CLS-based heads or MCLS).
MEAN_POOLING_MODES = ("dense", "bm25")


@dataclass
class RetrievalRun:
    """What :func:`retrieve` produced.

    Attributes:
        rankings: mode -> (Q, k) ranking.
        timings: stage -> seconds (encode_queries, encode_corpus, colbert_reencode, search/<mode>, bm25_index).
        info: sizes and choices made (colbert storage, index memory in bytes).
        fusion: fused mode (``dense+sparse``, ``all``) -> its candidates and their scores, to re-rank them with
            other weights (:meth:`FusionTerms.rank`).
    """

    rankings: dict[str, Ranking]
    timings: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    fusion: dict[str, FusionTerms] = field(default_factory=dict)


def _check_modes(modes: Sequence[str], cfg: RetrievalConfig) -> None:
    unknown = [m for m in modes if m not in NEEDS]
    if unknown:
        raise ValueError(f"unknown retrieval mode(s) {unknown}; choose from {list(MODES)}")
    if cfg.pooling == "mean":
        wrong = [m for m in modes if m not in MEAN_POOLING_MODES]
        if wrong:
            raise ValueError(
                f"retrieval modes {wrong} need CLS pooling (sparse/ColBERT heads, MCLS); with pooling=mean "
                f"evaluate modes={list(MEAN_POOLING_MODES)}"
            )


def usable_modes(model: M3Model, modes: Sequence[str]) -> list[str]:
    """``modes`` validated; without trained heads only ``dense``, ``dense+mcls`` and ``bm25`` remain, with a
    loud warning."""
    unknown = [m for m in modes if m not in NEEDS]
    if unknown:
        raise ValueError(f"unknown retrieval mode(s) {unknown}; choose from {list(MODES)}")
    if getattr(model, "heads_loaded", True):
        return list(modes)
    dropped = [m for m in modes if NEEDS[m] - _NO_HEADS]
    if dropped:
        log.warning(
            "!!! The model has NO TRAINED sparse/ColBERT heads (sparse_linear.pt / colbert_linear.pt missing): "
            "evaluating DENSE ONLY. Modes %s are NOT reported (they would be random, not zero). !!!",
            dropped,
        )
    return [m for m in modes if m not in dropped]


@contextmanager
def _timed(timings: dict[str, float], name: str):
    """Add the block's wall time to ``timings[name]``, then return the memory it freed to the OS."""
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
    trim_heap()


def _corpus_key(texts: Sequence[str], needs: set[str], cfg: RetrievalConfig) -> tuple:
    """What decides a corpus encoding: the texts, the representations, and the passage-side settings."""
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()
    passage = {k: v for k, v in cfg.to_dict().items() if not k.startswith("query_")}
    return digest, tuple(sorted(needs)), tuple(sorted((k, str(v)) for k, v in passage.items()))


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

    Args:
        model: the M3 model (its training flag is restored afterwards by ``encode_texts``).
        dataset: a loaded BEIR-style dataset.
        modes: subset of :data:`MODES`; modes needing untrained heads must be filtered by the caller
            (:func:`usable_modes`).
        config: retrieval settings (defaults: the paper's).
        depth: length of the returned lists (the largest metric cut-off).
        device: where to encode (None = the model's device).
        progress: progress bars.
        corpus_cache: a dict kept by the caller across calls with the SAME model: the encoded corpus is
            reused when the next dataset has the same corpus texts and passage settings (e.g. every
            MKQA-like language searches one English corpus). It holds one corpus at a time.
    """
    cfg = config or RetrievalConfig()
    modes = list(modes)
    _check_modes(modes, cfg)
    needs = set().union(*(NEEDS[m] for m in modes)) if modes else set()
    timings: dict[str, float] = {}
    info: dict = {"num_docs": len(dataset.corpus_texts), "num_queries": len(dataset.query_texts)}
    n_docs = len(dataset.corpus_texts)
    vocab = max(int(model.encoder.config.vocab_size), len(model.tokenizer))

    dense_k = max(
        [depth] * ("dense" in modes)
        + [cfg.colbert_rerank_k] * ("colbert" in modes)
        + [cfg.hybrid_k] * ("dense+sparse" in modes)
        + [cfg.all_rerank_k] * ("all" in modes)
        + [0]
    )
    hybrid_all = "all" in modes and cfg.all_candidates == "hybrid"  # All re-ranks dense + sparse candidates
    sparse_k = max(
        [depth] * ("sparse" in modes)
        + [cfg.hybrid_k] * ("dense+sparse" in modes)
        + [cfg.all_rerank_k] * hybrid_all
        + [0]
    )

    # ---- queries
    queries = None
    if needs:
        with _timed(timings, "encode_queries"):
            queries = encode_texts(
                model,
                dataset.query_texts,
                max_length=cfg.query_max_len,
                progress=False,
                dense=bool(needs & _NO_HEADS),
                sparse="sparse" in needs,
                colbert="colbert" in needs,
                batch_size=cfg.batch_size,
                device=device,
                pooling=cfg.pooling,
                prefix=cfg.query_prefix,
            )
    q_sparse = sparse_matrix(queries.sparse, vocab) if "sparse" in needs else None
    if q_sparse is not None and q_sparse.nnz == 0:
        log.warning(
            "every query's lexical weights are 0 (untrained or collapsed sparse head): the sparse "
            "mode finds nothing and scores 0, and adds nothing to dense+sparse / all"
        )

    # ---- corpus, shard by shard
    corpus = None
    if needs:
        key = _corpus_key(dataset.corpus_texts, needs, cfg)
        if corpus_cache is not None and corpus_cache.get("key") == key:
            corpus = corpus_cache["index"]
            log.info(
                "%s: corpus encoding reused from the previous dataset (same texts and settings)", dataset.name
            )
        else:
            with _timed(timings, "encode_corpus"):
                corpus = index_corpus(
                    model, dataset.corpus_texts, needs, cfg, vocab=vocab, device=device, progress=progress
                )
            if corpus_cache is not None:
                corpus_cache.clear()
                if corpus.info.get("colbert_store") != "reencode":  # a re-encode store fills per query set
                    corpus_cache.update(key=key, index=corpus)
        info.update(corpus.info)
    dense_index = corpus.dense if corpus else None
    sparse_index = corpus.sparse if corpus else None
    store = corpus.colbert if corpus else None

    rankings: dict[str, Ranking] = {}
    fusion: dict[str, FusionTerms] = {}
    dense_rank = sparse_rank = None
    if dense_index is not None:
        with _timed(timings, "search/dense"):
            dense_rank = dense_index.search(queries.dense, dense_k)
        rankings["dense"] = dense_rank.truncate(depth)
    if sparse_index is not None:
        with _timed(timings, "search/sparse"):
            sparse_rank = sparse_index.search(q_sparse, sparse_k)
        rankings["sparse"] = sparse_rank.truncate(depth)
    if corpus is not None and corpus.mcls is not None:
        with _timed(timings, "search/dense+mcls"):
            rankings["dense+mcls"] = corpus.mcls.search(queries.dense, depth)

    # MaxSim of the dense top candidates, once for both re-ranking modes (prefixes of one sorted list)
    colbert_k = max(
        [cfg.colbert_rerank_k] * ("colbert" in modes)
        + [cfg.all_rerank_k] * ("all" in modes and not hybrid_all)
        + [0]
    )
    all_cand = None  # (Q, M) All's candidates when they are not a prefix of the dense list
    if hybrid_all:
        all_cand = union_candidates(
            dense_rank.truncate(cfg.all_rerank_k), sparse_rank.truncate(cfg.all_rerank_k)
        )
    if (colbert_k or hybrid_all) and info.get("colbert_store") == "reencode":
        with _timed(timings, "colbert_reencode"):
            rows = [dense_rank.truncate(colbert_k).indices] + [all_cand] * hybrid_all
            rows = np.concatenate(rows, axis=1)
            store_candidates(model, dataset.corpus_texts, store, rows, cfg, device=device, progress=progress)
    if store is not None:
        info["colbert_store_bytes"] = store.nbytes
        info["colbert_stored_docs"] = len(store)
    score_device = device if device is not None else next(model.parameters()).device  # MaxSim: GPU if any
    if colbert_k:
        with _timed(timings, "search/colbert"):
            rerank = dense_rank.truncate(colbert_k).indices  # (Q, k) dense top-k, best first
            maxsim = store.score(queries.colbert, rerank, device=score_device)  # (Q, k)
    if "colbert" in modes:
        with _timed(timings, "search/colbert"):
            k = cfg.colbert_rerank_k
            rankings["colbert"] = fuse(rerank[:, :k], None, None, maxsim[:, :k], (0.0, 0.0, 1.0), depth)
    if "dense+sparse" in modes:
        with _timed(timings, "search/dense+sparse"):
            cand = union_candidates(dense_rank.truncate(cfg.hybrid_k), sparse_rank.truncate(cfg.hybrid_k))
            d = dense_index.score(queries.dense, cand)
            s = sparse_index.score(q_sparse, cand)
            fusion["dense+sparse"] = FusionTerms(cand, d, s)
            rankings["dense+sparse"] = fusion["dense+sparse"].rank(cfg.hybrid_weights, depth)
    if "all" in modes:
        with _timed(timings, "search/all"):
            if hybrid_all:
                cand = all_cand
                c = store.score(queries.colbert, cand, device=score_device)
            else:
                cand, c = rerank[:, : cfg.all_rerank_k], maxsim[:, : cfg.all_rerank_k]
            d = dense_index.score(queries.dense, cand)
            s = sparse_index.score(q_sparse, cand)
            fusion["all"] = FusionTerms(cand, d, s, c)
            rankings["all"] = fusion["all"].rank(cfg.all_weights, depth)
    if "bm25" in modes:
        drop = special_token_ids(model.tokenizer)
        bm25 = BM25Index(vocab, k1=cfg.bm25_k1, b=cfg.bm25_b)
        with _timed(timings, "bm25_index"):
            for start in range(0, n_docs, cfg.shard_size):
                bm25.add(
                    bm25_tokenize(model.tokenizer, dataset.corpus_texts[start : start + cfg.shard_size], drop)
                )
            bm25.weights()
        with _timed(timings, "search/bm25"):
            rankings["bm25"] = bm25.search(bm25_tokenize(model.tokenizer, dataset.query_texts, drop), depth)
    if dense_index is not None:
        info["dense_index_bytes"] = dense_index.vectors.nbytes
    if corpus is not None and corpus.mcls is not None:
        info["mcls_index_bytes"] = corpus.mcls.vectors.nbytes
    if sparse_index is not None:
        docs = sparse_index.documents
        info["sparse_index_bytes"] = 2 * (docs.data.nbytes + docs.indices.nbytes + docs.indptr.nbytes)
    return RetrievalRun(rankings={m: rankings[m] for m in modes}, timings=timings, info=info, fusion=fusion)


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
    dataset = (
        dataset_dir
        if isinstance(dataset_dir, RetrievalDataset)
        else load_beir(dataset_dir, split, unknown_qrels=unknown_qrels)
    )
    run = retrieve(
        model,
        dataset,
        usable_modes(model, modes),
        RetrievalConfig.from_mapping(config),
        depth=retrieval_depth(metrics, ignore_identical_ids),
        device=device,
        progress=progress,
        corpus_cache=corpus_cache,
    )
    return score_rankings(
        run.rankings, dataset, metrics, ignore_identical_ids=ignore_identical_ids, runs_dir=runs_dir
    )


def retrieval_depth(metrics: Sequence[str], ignore_identical_ids: bool = True) -> int:
    """How many documents to retrieve per query for ``metrics``: the largest cut-off, plus one when the
    query's own id is dropped (so each list still holds that many after :func:`drop_identical_ids`)."""
    return max(parse_metric(m)[1] for m in metrics) + (1 if ignore_identical_ids else 0)


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
        scored = evaluate_ranking(ranking, dataset.qrels, metrics)
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
