"""Dense, sparse, Dense+Sparse and All search in a Qdrant collection, fused as ``m3lit.evaluate`` fuses.

Every score comes from the database; the fusion is m3lit's (:mod:`m3lit.retrieval.index.hybrid`), not
Qdrant's own (its ``FusionQuery`` is reciprocal-rank fusion, which ignores the scores' sizes and has no
weights). Per query, up to five requests go to the database in one ``query_batch_points`` call:

    dense           top-``Kd`` by s_dense (Eq. 1)
    sparse          top-``Ks`` by s_lex (Eq. 2): only passages sharing a token with the query
    sparse@dense    s_lex of the dense top-``K`` (a ``Prefetch`` of the dense list, sparse-scored)
    dense@sparse    s_dense of the sparse top-``K`` (the same, the other way round)
    colbert@cands   MaxSim of All's candidates (a prefetch of the dense, or dense and sparse, top lists)

Then, with the weights and depths of :class:`~m3lit.retrieval.config.RetrievalConfig` (§3.2, Eq. 4):

- Dense+Sparse: the union of the dense and sparse top-``hybrid_k``, ranked by
  ``w_d s_dense + w_s s_lex`` (a passage missing from the sparse lists shares no token: s_lex = 0);
- All: the dense top-``all_rerank_k`` (``all_candidates=hybrid``: the union with the sparse top), ranked by
  ``w_d s_dense + w_s s_lex + w_c s_mul``, where s_mul is Qdrant's MaxSim divided by the query's token count
  (Eq. 3 averages over query tokens; Qdrant sums).

Lists are ordered as m3lit orders them (score descending, then row ascending:
:func:`~m3lit.retrieval.index.ranking.sort_rows`), so equal scores do not depend on the database's order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from m3lit.files.errors import UserError
from m3lit.inference.encoding import EncodedTexts, encode_texts
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.index.hybrid import fuse, union_candidates
from m3lit.retrieval.index.ranking import Ranking

__all__ = [
    "MODES",
    "DepthPlan",
    "VectorSearch",
    "dataset_rows",
    "encode_queries",
    "plan_depths",
    "relabel",
    "search",
]

#: The modes the database serves.
MODES = ("dense", "sparse", "dense+sparse", "all")


@dataclass(frozen=True)
class DepthPlan:
    """How deep each request of the module docstring goes (0: not sent)."""

    dense: int
    sparse: int
    sparse_at_dense: int
    dense_at_sparse: int
    colbert: int
    hybrid_all: bool


def plan_depths(modes: Sequence[str], cfg: RetrievalConfig, depth: int) -> DepthPlan:
    """The request depths that ``modes`` need for lists of ``depth``.

    As :func:`m3lit.retrieval.modes.plan_retrieval` plans m3lit's own search: Dense+Sparse needs both top
    ``hybrid_k`` lists, All the dense (and, ``all_candidates=hybrid``, the sparse) top ``all_rerank_k``.

    Raises:
        ValueError: no modes, or a mode the database does not serve (Multi-vec alone, BM25, Dense+MCLS).
    """
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise ValueError(f"vectordb search: modes {unknown or '[]'} not served; choose from {list(MODES)}")
    pair, full = "dense+sparse" in modes, "all" in modes
    hybrid_all = full and cfg.all_candidates == "hybrid"
    hk, ak = cfg.hybrid_k if pair else 0, cfg.all_rerank_k if full else 0
    return DepthPlan(
        dense=max(depth if "dense" in modes else 0, hk, ak),
        sparse=max(depth if "sparse" in modes else 0, hk, ak if hybrid_all else 0),
        sparse_at_dense=max(hk, ak),
        dense_at_sparse=max(hk, ak if hybrid_all else 0),
        colbert=ak,
        hybrid_all=hybrid_all,
    )


@dataclass
class VectorSearch:
    """The rankings of :func:`search` (mode -> (Q, depth), rows = point ids) and its wall times in seconds."""

    rankings: dict[str, Ranking]
    timings: dict[str, float] = field(default_factory=dict)


def _requests(queries: EncodedTexts, q: int, plan: DepthPlan) -> list[tuple[str, object]]:
    """The (kind, QueryRequest) pairs of query ``q`` (module docstring)."""
    from qdrant_client import models

    dense = np.asarray(queries.dense[q], np.float32).tolist()
    tok, wts = queries.sparse[q]
    sparse = models.SparseVector(indices=[int(t) for t in tok], values=[float(w) for w in wts])

    def first(vector, using, limit):
        return models.Prefetch(query=vector, using=using, limit=limit)

    def ask(vector, using, limit, prefetch=None):
        return models.QueryRequest(
            query=vector, using=using, limit=limit, prefetch=prefetch, with_payload=False
        )

    out = [("dense", ask(dense, "dense", plan.dense)), ("sparse", ask(sparse, "sparse", plan.sparse))]
    if plan.sparse_at_dense:
        limit = plan.sparse_at_dense
        out.append(("sparse", ask(sparse, "sparse", limit, first(dense, "dense", limit))))
    if plan.dense_at_sparse:
        limit = plan.dense_at_sparse
        out.append(("dense", ask(dense, "dense", limit, first(sparse, "sparse", limit))))
    if plan.colbert:
        k = plan.colbert
        cands = [first(dense, "dense", k)] + [first(sparse, "sparse", k)] * plan.hybrid_all
        colbert = np.asarray(queries.colbert[q], np.float32).tolist()
        out.append(("colbert", ask(colbert, "colbert", k * (1 + plan.hybrid_all), cands)))
    return [(kind, req) for kind, req in out if req.limit > 0]


def _lists(responses, kinds: list[str], n_tokens: int) -> tuple[dict, dict]:
    """The first dense and sparse lists ({row: score}, as returned) and every score seen, per kind."""
    lists: dict[str, dict[int, float]] = {}
    scores: dict[str, dict[int, float]] = {"dense": {}, "sparse": {}, "colbert": {}}
    for kind, response in zip(kinds, responses, strict=True):
        found = {int(p.id): float(p.score) for p in response.points}
        if kind == "colbert":
            found = {row: s / max(1, n_tokens) for row, s in found.items()}
        lists.setdefault(kind, found)
        scores[kind].update(found)
    return lists, scores


def _ranking(rows: list[dict[int, float]]) -> Ranking:
    width = max((len(r) for r in rows), default=0)
    indices = np.full((len(rows), width), -1, np.int64)
    values = np.full((len(rows), width), -np.inf, np.float32)
    for q, row in enumerate(rows):
        indices[q, : len(row)] = list(row)
        values[q, : len(row)] = list(row.values())
    return Ranking.from_candidates(indices, values)


def _lookup(candidates: np.ndarray, scores: list[dict[int, float]], missing: float | None) -> np.ndarray:
    """(Q, M) scores of the candidates; ``missing`` for a candidate without one (None: an error)."""
    out = np.zeros(candidates.shape, np.float32)
    for q, row in enumerate(candidates):
        for j, doc in enumerate(row):
            if doc >= 0:
                value = scores[q].get(int(doc), missing)
                if value is None:
                    raise RuntimeError(f"vectordb search: no score for row {doc} of query {q}")
                out[q, j] = value
    return out


def search(
    client,
    name: str,
    queries: EncodedTexts,
    modes: Sequence[str] = MODES,
    config: RetrievalConfig | None = None,
    depth: int = 100,
    batch_size: int = 32,
) -> VectorSearch:
    """Rank collection ``name`` for encoded ``queries`` (dense, sparse and ColBERT) in each of ``modes``.

    Args:
        client: a Qdrant client (:func:`m3lit.vectordb.collection.open_client`).
        name: the collection (:func:`m3lit.vectordb.collection.index_encoded`).
        queries: (Q,) queries with all three outputs (:func:`encode_queries`).
        modes: subset of :data:`MODES`.
        config: fusion weights and candidate depths (``hybrid_k``, ``hybrid_weights``, ``all_rerank_k``,
            ``all_candidates``, ``all_weights``); default m3lit's.
        depth: length of the returned lists.
        batch_size: queries per ``query_batch_points`` call.
    """
    cfg = config or RetrievalConfig()
    plan = plan_depths(modes, cfg, depth)
    start = time.perf_counter()
    firsts: dict[str, list] = {"dense": [], "sparse": []}
    every: dict[str, list] = {"dense": [], "sparse": [], "colbert": []}
    for lo in range(0, len(queries.dense), batch_size):
        batch = [_requests(queries, q, plan) for q in range(lo, min(lo + batch_size, len(queries.dense)))]
        responses = iter(client.query_batch_points(name, [req for pairs in batch for _, req in pairs]))
        for q, pairs in enumerate(batch, start=lo):
            answers = [next(responses) for _ in pairs]
            lists, scores = _lists(answers, [k for k, _ in pairs], len(queries.colbert[q]))
            for kind in firsts:
                firsts[kind].append(lists.get(kind, {}))
            for kind in every:
                every[kind].append(scores[kind])
    timings = {"search_requests": time.perf_counter() - start}
    dense, sparse = _ranking(firsts["dense"]), _ranking(firsts["sparse"])
    rankings = {}
    if "dense" in modes:
        rankings["dense"] = dense.truncate(depth)
    if "sparse" in modes:
        rankings["sparse"] = sparse.truncate(depth)
    if "dense+sparse" in modes:
        cand = union_candidates(dense.truncate(cfg.hybrid_k), sparse.truncate(cfg.hybrid_k))
        terms = _lookup(cand, every["dense"], None), _lookup(cand, every["sparse"], 0.0)
        rankings["dense+sparse"] = fuse(cand, *terms, None, (*cfg.hybrid_weights, 0.0), depth)
    if "all" in modes:
        k = cfg.all_rerank_k
        tops = [dense.truncate(k)] + [sparse.truncate(k)] * plan.hybrid_all
        cand = union_candidates(*tops)
        terms = [
            _lookup(cand, every[t], 0.0 if t == "sparse" else None) for t in ("dense", "sparse", "colbert")
        ]
        rankings["all"] = fuse(cand, *terms, cfg.all_weights, depth)
    timings["search_total"] = time.perf_counter() - start
    return VectorSearch(rankings, timings)


def encode_queries(model, texts: Sequence[str], config: RetrievalConfig | None = None) -> EncodedTexts:
    """Encode query ``texts`` with all three outputs as ``m3lit.evaluate`` does (``query_max_len``, pooling,
    ``query_prefix``, ``batch_size`` of ``config``)."""
    cfg = config or RetrievalConfig()
    lengths = {"batch_size": cfg.batch_size, "max_length": cfg.query_max_len}
    heads = {"dense": True, "sparse": True, "colbert": True}
    return encode_texts(model, texts, **lengths, **heads, pooling=cfg.pooling, prefix=cfg.query_prefix)


def dataset_rows(collection_ids: Sequence[str], corpus_ids: Sequence[str]) -> np.ndarray:
    """(N,) the dataset row of each point (by passage id), to score database rankings against qrels.

    Raises:
        UserError: a passage of the collection that the dataset's corpus does not hold.
    """
    where = {pid: row for row, pid in enumerate(corpus_ids)}
    missing = [pid for pid in collection_ids if pid not in where]
    if missing:
        raise UserError(
            f"vectordb: {len(missing)} passages of the collection are not in the dataset's corpus "
            f"(first: {missing[0]!r}): index the dataset's corpus.jsonl"
        )
    return np.asarray([where[pid] for pid in collection_ids], np.int64)


def relabel(ranking: Ranking, rows: np.ndarray) -> Ranking:
    """``ranking`` with point ids replaced by ``rows[id]`` (padding -1 kept); order and scores unchanged."""
    indices = np.where(ranking.indices >= 0, rows[np.maximum(ranking.indices, 0)], -1)
    return Ranking(indices, ranking.scores)
