"""One m3lit model behind mteb's search interface: the corpus is indexed once, one search ranks every mode.

mteb (2.x) asks a search model to ``index`` a task's corpus and then ``search`` it with the task's queries.
:class:`M3Search` answers both for every retrieval mode at once with m3lit's own retrieval code
(:func:`m3lit.retrieval.index.search.run_plan`): the corpus is encoded with every head the modes need (the
encoding is kept while the next query set searches the same corpus), the first-stage dense and sparse lists
are searched once, the ColBERT MaxSim of the dense candidates is computed once, and each mode is ranked from
them exactly as ``python -m m3lit.evaluate`` ranks it (fusion weights and re-ranking depths from the
:class:`~m3lit.retrieval.config.RetrievalConfig`). The per-mode adapters of :mod:`m3lit.mteb.model` read
their mode's lists from the shared result.

mteb scores a run with pytrec_eval, which holds scores in single precision, orders documents by score and
breaks ties by document id (descending), whereas m3lit breaks them by corpus row (ascending). :func:`as_run`
therefore lowers a tied score by the few float32 units in the last place (~6e-8 relative each) that keep
m3lit's order, so mteb scores the very lists m3lit ranked.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence

import numpy as np

from m3lit.model import M3Model
from m3lit.retrieval.beir import RetrievalDataset
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.index.ranking import Ranking
from m3lit.retrieval.index.search import run_plan
from m3lit.retrieval.modes import MODEL_MODES, plan_retrieval, usable_modes

__all__ = ["M3Search", "as_run", "document_text", "strictly_decreasing"]

log = logging.getLogger(__name__)


def document_text(title: str | None, text: str) -> str:
    """A corpus row's text as m3lit's BEIR loader builds it: ``title + " " + text`` (title optional)."""
    return f"{title} {text}".strip() if title else text


def _digest(ids: Sequence[str], texts: Sequence[str]) -> str:
    """sha256 of the ids and texts of a corpus or query set (what decides whether a result can be reused)."""
    hasher = hashlib.sha256()
    for part in (*ids, "\x01", *texts):
        hasher.update(part.encode("utf-8") + b"\x00")
    return hasher.hexdigest()


def strictly_decreasing(scores: np.ndarray) -> np.ndarray:
    """``scores`` (k,) sorted best first, as float32, each tie lowered to the next float32 below its
    predecessor, so that a sort by score alone (in single precision) gives back the same order.

    >>> strictly_decreasing(np.array([3.0, 2.0, 2.0, 1.0], np.float32)).tolist()[:2]
    [3.0, 2.0]
    >>> values = strictly_decreasing(np.array([2.0, 2.0, 2.0], np.float32))
    >>> bool(values[0] > values[1] > values[2]) and bool(abs(values[2] - 2.0) < 1e-6)
    True
    """
    values = np.asarray(scores, np.float32).copy()
    for i in range(1, values.size):
        if values[i] >= values[i - 1]:
            values[i] = np.nextafter(values[i - 1], np.float32(-np.inf))
    return values


def as_run(
    ranking: Ranking, query_ids: Sequence[str], corpus_ids: Sequence[str]
) -> dict[str, dict[str, float]]:
    """A (Q, k) :class:`Ranking` as mteb's run: query id -> {document id: score}, padding dropped, ties kept
    in m3lit's order (:func:`strictly_decreasing`)."""
    run = {}
    for row, query_id in enumerate(query_ids):
        docs, scores = ranking.indices[row], ranking.scores[row]
        kept = docs >= 0
        values = strictly_decreasing(scores[kept])
        run[query_id] = {corpus_ids[d]: float(v) for d, v in zip(docs[kept].tolist(), values, strict=True)}
    return run


class M3Search:
    """An m3lit model, its retrieval settings and the modes it ranks, shared by the per-mode mteb adapters.

    Args:
        model: the M3 model (put in eval mode).
        modes: retrieval modes to rank (any of :data:`~m3lit.retrieval.modes.MODEL_MODES`); a model without
            trained sparse/ColBERT heads keeps only ``dense``, with a loud warning.
        config: retrieval settings (lengths, prefixes, re-ranking depths, fusion weights).
        device: where to encode (None: the model's device).
        progress: progress bars while encoding the corpus.
    """

    def __init__(
        self,
        model: M3Model,
        modes: Sequence[str] = MODEL_MODES,
        config: RetrievalConfig | None = None,
        *,
        device=None,
        progress: bool = False,
    ) -> None:
        wrong = [m for m in modes if m not in MODEL_MODES]
        if wrong:
            raise ValueError(f"modes {wrong}: mteb runs the model's own modes only, {list(MODEL_MODES)}")
        self.model = model.eval()
        self.modes = tuple(usable_modes(model, modes))
        self.config = config or RetrievalConfig()
        self.device = device
        self.progress = progress
        self._corpus: tuple[str, list[str], list[str]] | None = None  # (digest, ids, texts)
        self._corpus_cache: dict = {}  # the encoded corpus, reused by run_plan for the next query set
        self._runs: tuple[tuple, dict[str, dict[str, dict[str, float]]]] | None = None

    def index(self, ids: Iterable[str], texts: Iterable[str]) -> None:
        """Remember the corpus to search (its encoding happens at the first search, once for every mode and
        query set). The same corpus again (same ids and texts) keeps the encoding and the results."""
        ids, texts = [str(i) for i in ids], list(texts)
        digest = _digest(ids, texts)
        if self._corpus is None or self._corpus[0] != digest:
            self._corpus = (digest, ids, texts)

    def search(
        self, mode: str, query_ids: Iterable[str], query_texts: Iterable[str], top_k: int
    ) -> dict[str, dict[str, float]]:
        """mteb's run of ``mode``: query id -> {document id: score}, the ``top_k`` best per query.

        Every mode is ranked the first time a query set is searched; later modes read their lists.
        """
        if self._corpus is None:
            raise RuntimeError("M3Search.search before index: mteb indexes the corpus first")
        if mode not in self.modes:
            raise ValueError(f"mode {mode!r} is not ranked by this search (modes {list(self.modes)})")
        query_ids, query_texts = [str(i) for i in query_ids], list(query_texts)
        key = (self._corpus[0], _digest(query_ids, query_texts), int(top_k))
        if self._runs is None or self._runs[0] != key:
            self._runs = (key, self._rank_all(query_ids, query_texts, int(top_k)))
        return self._runs[1][mode]

    def _rank_all(
        self, query_ids: list[str], query_texts: list[str], top_k: int
    ) -> dict[str, dict[str, dict[str, float]]]:
        """Rank every mode for one query set (:func:`run_plan`; the corpus encoding comes from the cache when
        the corpus has not changed)."""
        _, corpus_ids, corpus_texts = self._corpus
        qrels: list[dict[int, int]] = [{} for _ in query_ids]  # run_plan ranks; mteb scores
        dataset = RetrievalDataset("mteb", corpus_ids, corpus_texts, query_ids, query_texts, qrels)
        plan = plan_retrieval(self.modes, self.config, top_k)
        run = run_plan(
            self.model,
            dataset,
            plan,
            device=self.device,
            progress=self.progress,
            corpus_cache=self._corpus_cache,
        )
        log.info(
            "ranked %d queries over %d documents in modes %s", len(query_ids), len(corpus_ids), self.modes
        )
        return {mode: as_run(ranking, query_ids, corpus_ids) for mode, ranking in run.rankings.items()}
