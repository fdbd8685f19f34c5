"""Fusion weights chosen on dev queries: the Dense+Sparse and All weights of a task, picked without the test set.

BGE-M3 ranks by s_rank = w1 s_dense + w2 s_lex + w3 s_mul (arXiv:2402.03216 §3.2; spec §1.6) and reports
each benchmark with fixed weights (MKQA's 1 / 0.3 / 1, MLDR's 0.15 / 0.5 / 0.35; spec §6). Those weights suit BGE-M3's score scales; a model trained for a few hundred steps from another
encoder (e.g. multilingual-e5 with a fresh lexical head) has other scales, and its best mix differs. Here the
weights are chosen on a task's *dev* queries (BEIR layout: ``qrels/dev.tsv`` beside ``qrels/test.tsv``, the
same corpus, other queries), the way MIRACL's dev split is used to tune a system before its test numbers
are read:

1. every dev query's candidates of a fused mode are retrieved once with their exact dense, lexical and
   ColBERT scores (:class:`~m3lit.retrieval.index.hybrid.FusionTerms`);
2. each weight vector of a fixed grid re-ranks them, and the task's primary metric is averaged over the
   task's languages (each language weighs the same, as in the table's average column);
3. the best vector wins; a tie keeps the task's own weights, then the earlier grid entry. Dev averages
   within :data:`DEV_TIE_TOLERANCE` of the best count as tied: two weight vectors whose dev scores differ only
   by float noise (another CPU, BLAS or thread count) would otherwise swap places between machines.

Only ratios matter to a ranking, so the grid fixes w_dense = 1. It includes the task's own weights, so the
choice never scores below them on dev. The test queries are then ranked once with the winner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from m3lit.retrieval.beir import RetrievalDataset
from m3lit.retrieval.index.hybrid import FusionTerms
from m3lit.retrieval.modes import retrieval_depth
from m3lit.retrieval.pipeline import score_rankings

__all__ = ["FUSED_MODES", "COLBERT_WEIGHTS", "DEV_TIE_TOLERANCE", "SPARSE_WEIGHTS", "WEIGHT_FIELDS", "FusionChoice",
           "choose_weights", "first_best", "weight_grid"]  # fmt: skip

#: The modes whose ranking is a weighted sum of scores -> the RetrievalConfig field holding their weights.
WEIGHT_FIELDS = {"dense+sparse": "hybrid_weights", "all": "all_weights"}
FUSED_MODES = tuple(WEIGHT_FIELDS)
#: w_sparse / w_dense candidates: from none to lexical-dominated (MLDR's 0.5 / 0.15 = 3.3 lies inside).
SPARSE_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)
#: w_colbert / w_dense candidates for All.
COLBERT_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
#: Dev averages (in [0, 1]) at most this far below the best are ties (0.01 points in the x100 tables).
DEV_TIE_TOLERANCE = 1e-4


def first_best(scores: Sequence[float], tolerance: float = DEV_TIE_TOLERANCE) -> int:
    """Index of the first score within ``tolerance`` of the maximum (the fixed candidate order breaks ties)."""
    top = max(scores)
    return next(i for i, score in enumerate(scores) if score >= top - tolerance)


def weight_grid(mode: str) -> list[tuple[float, ...]]:
    """The weight vectors tried for ``mode``: (1, w_sparse) for Dense+Sparse, (1, w_sparse, w_colbert) for All."""
    if mode == "dense+sparse":
        return [(1.0, s) for s in SPARSE_WEIGHTS]
    if mode == "all":
        return [(1.0, s, c) for s in SPARSE_WEIGHTS for c in COLBERT_WEIGHTS]
    raise ValueError(f"{mode!r} has no fusion weights; fused modes: {list(FUSED_MODES)}")


@dataclass(frozen=True)
class FusionChoice:
    """The outcome of :func:`choose_weights` for one mode of one task.

    Attributes:
        mode: ``dense+sparse`` or ``all``.
        metric: the metric averaged on dev.
        weights: the chosen weights.
        default: the task's own weights (what the test queries would get without tuning).
        dev: the dev average with ``weights``; ``dev_default``: with ``default`` (both in [0, 1]).
        queries: dev queries per language.
    """

    mode: str
    metric: str
    weights: tuple[float, ...]
    default: tuple[float, ...]
    dev: float
    dev_default: float
    queries: dict[str, int]

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "weights": list(self.weights),
            "default": list(self.default),
            "dev": self.dev,
            "dev_default": self.dev_default,
            "queries": dict(self.queries),
        }


def choose_weights(
    dev: Sequence[tuple[str, RetrievalDataset, FusionTerms]],
    mode: str,
    metric: str,
    default: Sequence[float],
    *,
    ignore_identical_ids: bool = True,
) -> FusionChoice:
    """Pick ``mode``'s weights on dev queries (see the module docstring).

    Args:
        dev: per language, ``(language, dev dataset, the mode's FusionTerms for its queries)``; the terms
            must hold enough candidates for ``metric``'s cut-off (plus one with ``ignore_identical_ids``).
        mode: ``dense+sparse`` or ``all``.
        metric: e.g. ``ndcg@10`` (the task's primary metric).
        default: the task's own weights; tried first, so a tie keeps them.
        ignore_identical_ids: drop a query's own id from its ranking before scoring (as the test scoring does).
    """
    if not dev:
        raise ValueError(f"choose_weights({mode!r}): no dev queries")
    depth = retrieval_depth([metric], ignore_identical_ids)

    def dev_average(weights: tuple[float, ...]) -> float:
        values = [
            score_rankings(
                {mode: terms.rank(weights, depth)},
                dataset,
                [metric],
                ignore_identical_ids=ignore_identical_ids,
            )[mode][metric]
            for _, dataset, terms in dev
        ]
        return float(np.mean(values))

    default = tuple(float(w) for w in default)
    candidates = [default, *(w for w in weight_grid(mode) if w != default)]
    scores = [dev_average(w) for w in candidates]
    best = first_best(scores)  # the default on a (near-)tie, then grid order
    return FusionChoice(
        mode=mode,
        metric=metric,
        weights=candidates[best],
        default=default,
        dev=scores[best],
        dev_default=scores[0],
        queries={lang: dataset.num_relevant_queries for lang, dataset, _ in dev},
    )
