"""Encode, index, search and rank: one :class:`~m3lit.retrieval.modes.RetrievalPlan` carried out on a dataset.

:func:`run_plan` encodes the queries, indexes the corpus shard by shard (:mod:`m3lit.retrieval.index.corpus`,
where the memory choices are described; or reuses the caller's cached corpus), searches the first-stage dense
and sparse lists, scores the ColBERT candidates once for Multi-vec and All, then ranks each mode with its own
function (:data:`RANKERS`; the modes are described in :mod:`m3lit.retrieval.pipeline`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from m3lit.inference.encoding import encode_texts
from m3lit.model import M3Model, special_token_ids
from m3lit.retrieval.beir import RetrievalDataset
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.index.bm25 import BM25Index, bm25_tokenize
from m3lit.retrieval.index.corpus import CorpusIndex, index_corpus, store_candidates, trim_heap
from m3lit.retrieval.index.hybrid import FusionTerms, fuse, union_candidates
from m3lit.retrieval.index.ranking import Ranking
from m3lit.retrieval.index.sparse import sparse_matrix
from m3lit.retrieval.modes import NO_HEADS, RetrievalPlan

__all__ = ["CORPUS_CACHE_ENTRIES", "RANKERS", "RetrievalRun", "run_plan"]

log = logging.getLogger(__name__)


#: How many encoded corpora a ``corpus_cache`` keeps: a suite whose tasks share a corpus with another
#: corpus between them (MIRACL-like en, fr, then MKQA-like on the en corpus) encodes each corpus once.
CORPUS_CACHE_ENTRIES = 2


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


@dataclass
class _Search:
    """One :func:`run_plan` call's inputs and what its stages computed so far (a mode function reads it).

    ``queries``: the encoded queries; ``q_sparse``: (Q, V) their lexical weights; ``dense`` / ``sparse``: the
    first-stage lists (``plan.dense_k`` / ``plan.sparse_k`` long); ``rerank`` / ``maxsim``: (Q, colbert_k)
    the dense top candidates and their MaxSim scores; ``all_candidates``: (Q, M) All's hybrid candidates.
    """

    model: M3Model
    dataset: RetrievalDataset
    plan: RetrievalPlan
    device: object
    vocab: int
    run: RetrievalRun
    queries: object = None
    q_sparse: object = None
    corpus: CorpusIndex | None = None
    dense: Ranking | None = None
    sparse: Ranking | None = None
    rerank: np.ndarray | None = None
    maxsim: np.ndarray | None = None
    all_candidates: np.ndarray | None = None

    @property
    def cfg(self) -> RetrievalConfig:
        return self.plan.config

    def timed(self, name: str):
        return _timed(self.run.timings, name)

    @property
    def score_device(self):
        """Where MaxSim is computed: the encoding device (the GPU if any)."""
        return self.device if self.device is not None else next(self.model.parameters()).device


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


def run_plan(
    model: M3Model,
    dataset: RetrievalDataset,
    plan: RetrievalPlan,
    *,
    device=None,
    progress: bool = False,
    corpus_cache: dict | None = None,
) -> RetrievalRun:
    """Carry out ``plan`` on ``dataset`` (:func:`retrieve`'s work once planned): encode the queries, index the
    corpus, search the first-stage lists, score the ColBERT candidates, then rank each mode (:data:`RANKERS`)."""
    cfg = plan.config
    vocab = max(int(model.encoder.config.vocab_size), len(model.tokenizer))
    info = {"num_docs": len(dataset.corpus_texts), "num_queries": len(dataset.query_texts)}
    search = _Search(model, dataset, plan, device, vocab, RetrievalRun({}, info=info))
    if plan.needs:
        _encode_queries(search)
        _index_corpus(search, progress, corpus_cache)
        _first_stage(search)
        _colbert_candidates(search, progress)
    run = search.run
    for mode in plan.modes:
        ranked = RANKERS[mode](search)
        if isinstance(ranked, FusionTerms):
            run.fusion[mode] = ranked
            ranked = ranked.rank(
                cfg.hybrid_weights if mode == "dense+sparse" else cfg.all_weights, plan.depth
            )
        run.rankings[mode] = ranked
    run.info.update(_index_sizes(search.corpus))
    return run


# ------------------------------------------------------------------------------------------------ stages
def _encode_queries(search: _Search) -> None:
    needs, cfg = search.plan.needs, search.cfg
    with search.timed("encode_queries"):
        search.queries = encode_texts(
            search.model,
            search.dataset.query_texts,
            max_length=cfg.query_max_len,
            progress=False,
            dense=bool(needs & NO_HEADS),
            sparse="sparse" in needs,
            colbert="colbert" in needs,
            batch_size=cfg.batch_size,
            device=search.device,
            pooling=cfg.pooling,
            prefix=cfg.query_prefix,
        )
    if "sparse" in needs:
        search.q_sparse = sparse_matrix(search.queries.sparse, search.vocab)
        if search.q_sparse.nnz == 0:
            log.warning(
                "every query's lexical weights are 0 (untrained or collapsed sparse head): the sparse "
                "mode finds nothing and scores 0, and adds nothing to dense+sparse / all"
            )


def _index_corpus(search: _Search, progress: bool, corpus_cache: dict | None) -> None:
    """Encode the corpus shard by shard into the indices, or reuse a cached one (same texts, settings).

    ``corpus_cache`` maps a corpus key (:func:`_corpus_key`) to its :class:`CorpusIndex`, the most recently
    used last; it keeps :data:`CORPUS_CACHE_ENTRIES` of them.
    """
    texts, needs = search.dataset.corpus_texts, set(search.plan.needs)
    key = _corpus_key(texts, needs, search.cfg)
    if corpus_cache is not None and key in corpus_cache:
        search.corpus = corpus_cache[key] = corpus_cache.pop(key)  # now the most recently used
        log.info(
            "%s: corpus encoding reused from an earlier dataset (same texts and settings)",
            search.dataset.name,
        )
    else:
        with search.timed("encode_corpus"):
            search.corpus = index_corpus(
                search.model,
                texts,
                needs,
                search.cfg,
                vocab=search.vocab,
                device=search.device,
                progress=progress,
            )
        # a re-encode store fills per query set: never reused
        if corpus_cache is not None and search.corpus.info.get("colbert_store") != "reencode":
            corpus_cache[key] = search.corpus
            while len(corpus_cache) > CORPUS_CACHE_ENTRIES:
                del corpus_cache[next(iter(corpus_cache))]  # the least recently used
    search.run.info.update(search.corpus.info)


def _first_stage(search: _Search) -> None:
    """The dense and sparse top lists that every mode but BM25 and Dense+MCLS starts from."""
    corpus = search.corpus
    if corpus.dense is not None:
        with search.timed("search/dense"):
            search.dense = corpus.dense.search(search.queries.dense, search.plan.dense_k)
    if corpus.sparse is not None:
        with search.timed("search/sparse"):
            search.sparse = corpus.sparse.search(search.q_sparse, search.plan.sparse_k)


def _colbert_candidates(search: _Search, progress: bool) -> None:
    """All's hybrid candidates, the ColBERT vectors of the candidates (a re-encode store), and the MaxSim of
    the dense top-``colbert_k`` once for both re-ranking modes (prefixes of one sorted list)."""
    plan, cfg, store = search.plan, search.cfg, search.corpus.colbert
    if plan.hybrid_all:
        search.all_candidates = union_candidates(
            search.dense.truncate(cfg.all_rerank_k), search.sparse.truncate(cfg.all_rerank_k)
        )
    if (plan.colbert_k or plan.hybrid_all) and search.run.info.get("colbert_store") == "reencode":
        with search.timed("colbert_reencode"):
            rows = [search.dense.truncate(plan.colbert_k).indices] + [search.all_candidates] * plan.hybrid_all
            rows = np.concatenate(rows, axis=1)
            store_candidates(
                search.model,
                search.dataset.corpus_texts,
                store,
                rows,
                cfg,
                device=search.device,
                progress=progress,
            )
    if store is not None:
        search.run.info["colbert_store_bytes"] = store.nbytes
        search.run.info["colbert_stored_docs"] = len(store)
    if plan.colbert_k:
        with search.timed("search/colbert"):
            search.rerank = search.dense.truncate(plan.colbert_k).indices  # (Q, k) dense top-k, best first
            search.maxsim = store.score(search.queries.colbert, search.rerank, device=search.score_device)


def _index_sizes(corpus: CorpusIndex | None) -> dict:
    """Memory of each index in bytes."""
    if corpus is None:
        return {}
    sizes = {}
    if corpus.dense is not None:
        sizes["dense_index_bytes"] = corpus.dense.vectors.nbytes
    if corpus.mcls is not None:
        sizes["mcls_index_bytes"] = corpus.mcls.vectors.nbytes
    if corpus.sparse is not None:
        docs = corpus.sparse.documents
        sizes["sparse_index_bytes"] = 2 * (docs.data.nbytes + docs.indices.nbytes + docs.indptr.nbytes)
    return sizes


# ------------------------------------------------------------------------------------- one function per mode
def _rank_dense(search: _Search) -> Ranking:
    """Exact top-k by s_dense (§3.2, Eq. 1)."""
    return search.dense.truncate(search.plan.depth)


def _rank_sparse(search: _Search) -> Ranking:
    """Exact top-k by s_lex (§3.2, Eq. 2) over the inverted index."""
    return search.sparse.truncate(search.plan.depth)


def _rank_dense_mcls(search: _Search) -> Ranking:
    """Exact dense top-k over the passages encoded with a CLS every ``mcls_interval`` tokens (App. B.2)."""
    with search.timed("search/dense+mcls"):
        return search.corpus.mcls.search(search.queries.dense, search.plan.depth)


def _rank_colbert(search: _Search) -> Ranking:
    """Multi-vec: the dense top-``colbert_rerank_k`` re-ranked by MaxSim (§3.2, Eq. 3)."""
    k = search.cfg.colbert_rerank_k
    with search.timed("search/colbert"):
        return fuse(
            search.rerank[:, :k], None, None, search.maxsim[:, :k], (0.0, 0.0, 1.0), search.plan.depth
        )


def _rank_dense_sparse(search: _Search) -> FusionTerms:
    """Dense+Sparse: the union of both top-``hybrid_k`` lists, with both scores (weighted by the caller)."""
    k = search.cfg.hybrid_k
    with search.timed("search/dense+sparse"):
        cand = union_candidates(search.dense.truncate(k), search.sparse.truncate(k))
        dense = search.corpus.dense.score(search.queries.dense, cand)
        sparse = search.corpus.sparse.score(search.q_sparse, cand)
        return FusionTerms(cand, dense, sparse)


def _rank_all(search: _Search) -> FusionTerms:
    """All (§3.2, Eq. 4): the dense top-``all_rerank_k`` (or the hybrid candidates) with the three scores."""
    k, queries = search.cfg.all_rerank_k, search.queries
    with search.timed("search/all"):
        if search.plan.hybrid_all:
            cand = search.all_candidates
            colbert = search.corpus.colbert.score(queries.colbert, cand, device=search.score_device)
        else:
            cand, colbert = search.rerank[:, :k], search.maxsim[:, :k]
        dense = search.corpus.dense.score(queries.dense, cand)
        sparse = search.corpus.sparse.score(search.q_sparse, cand)
        return FusionTerms(cand, dense, sparse, colbert)


def _rank_bm25(search: _Search) -> Ranking:
    """BM25 over the model's tokens (the reference row; no trained weights, no prefixes)."""
    tokenizer, cfg, texts = search.model.tokenizer, search.cfg, search.dataset.corpus_texts
    drop = special_token_ids(tokenizer)
    bm25 = BM25Index(search.vocab, k1=cfg.bm25_k1, b=cfg.bm25_b)
    with search.timed("bm25_index"):
        for start in range(0, len(texts), cfg.shard_size):
            bm25.add(bm25_tokenize(tokenizer, texts[start : start + cfg.shard_size], drop))
        bm25.weights()
    with search.timed("search/bm25"):
        return bm25.search(bm25_tokenize(tokenizer, search.dataset.query_texts, drop), search.plan.depth)


#: Mode -> the function that ranks it from a :class:`_Search` (a fused mode returns its :class:`FusionTerms`).
RANKERS = {
    "dense": _rank_dense,
    "sparse": _rank_sparse,
    "colbert": _rank_colbert,
    "dense+sparse": _rank_dense_sparse,
    "all": _rank_all,
    "dense+mcls": _rank_dense_mcls,
    "bm25": _rank_bm25,
}
