"""The retrieval modes, what each needs, and the plan of one :func:`m3lit.retrieval.pipeline.retrieve` call.

The modes are the rows of the paper's tables (BGE-M3, arXiv:2402.03216 §4, Tables 1-5); see
:mod:`m3lit.retrieval.pipeline` for what each computes. A :class:`RetrievalPlan` says, before anything is
encoded, which representations the modes need and how long each candidate list must be.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from m3lit.files.errors import did_you_mean
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.metrics import parse_metric

__all__ = [
    "DEFAULT_MODES",
    "MEAN_POOLING_MODES",
    "MODEL_MODES",
    "MODES",
    "NEEDS",
    "RetrievalPlan",
    "check_modes",
    "plan_retrieval",
    "retrieval_depth",
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
NO_HEADS = {"dense", "mcls"}
#: Modes that mean pooling allows (the others need CLS-based heads or MCLS).
MEAN_POOLING_MODES = ("dense", "bm25")


def _check_known(modes: Sequence[str]) -> None:
    unknown = [m for m in modes if m not in NEEDS]
    if unknown:
        hint = did_you_mean(unknown[0], MODES)
        raise ValueError(f"unknown retrieval mode(s) {unknown}{hint}; choose from {list(MODES)}")


def check_modes(modes: Sequence[str], cfg: RetrievalConfig) -> None:
    """Raise ValueError for an unknown mode, or a mode that mean pooling cannot serve."""
    _check_known(modes)
    if cfg.pooling == "mean":
        wrong = [m for m in modes if m not in MEAN_POOLING_MODES]
        if wrong:
            raise ValueError(
                f"retrieval modes {wrong} need CLS pooling (sparse/ColBERT heads, MCLS); with pooling=mean "
                f"evaluate modes={list(MEAN_POOLING_MODES)}"
            )


def usable_modes(model, modes: Sequence[str]) -> list[str]:
    """``modes`` validated; without trained heads only ``dense``, ``dense+mcls`` and ``bm25`` remain, with a
    loud warning."""
    _check_known(modes)
    if getattr(model, "heads_loaded", True):
        return list(modes)
    dropped = [m for m in modes if NEEDS[m] - NO_HEADS]
    if dropped:
        log.warning(
            "!!! The model has NO TRAINED sparse/ColBERT heads (sparse_linear.pt / colbert_linear.pt missing): "
            "evaluating DENSE ONLY. Modes %s are NOT reported (they would be random, not zero). !!!",
            dropped,
        )
    return [m for m in modes if m not in dropped]


def retrieval_depth(metrics: Sequence[str], ignore_identical_ids: bool = True) -> int:
    """How many documents to retrieve per query for ``metrics``: the largest cut-off, plus one when the
    query's own id is dropped (so each list still holds that many after
    :func:`m3lit.retrieval.pipeline.drop_identical_ids`)."""
    return max(parse_metric(m)[1] for m in metrics) + (1 if ignore_identical_ids else 0)


@dataclass(frozen=True)
class RetrievalPlan:
    """What one retrieval computes, decided from the modes and settings before anything is encoded.

    Attributes:
        config: the retrieval settings.
        modes: the modes to rank, in the caller's order.
        depth: length of every returned list.
        needs: representations to encode (``dense``, ``sparse``, ``colbert``, ``mcls``).
        dense_k: length of the first-stage dense list (0: none): the longest any mode reads.
        sparse_k: length of the first-stage sparse list (0: none).
        colbert_k: MaxSim is computed over the dense top-``colbert_k`` once, for ``colbert`` and ``all``.
        hybrid_all: ``all`` re-ranks the union of the dense and sparse top-``all_rerank_k``.
    """

    config: RetrievalConfig
    modes: tuple[str, ...]
    depth: int
    needs: frozenset[str]
    dense_k: int
    sparse_k: int
    colbert_k: int
    hybrid_all: bool


def plan_retrieval(modes: Sequence[str], cfg: RetrievalConfig, depth: int) -> RetrievalPlan:
    """The :class:`RetrievalPlan` of ranking ``modes`` to ``depth`` with ``cfg`` (checked: :func:`check_modes`)."""
    modes = tuple(modes)
    check_modes(modes, cfg)
    hybrid_all = "all" in modes and cfg.all_candidates == "hybrid"

    def longest(*wanted: tuple[bool, int]) -> int:
        return max([k for on, k in wanted if on] + [0])

    return RetrievalPlan(
        config=cfg,
        modes=modes,
        depth=depth,
        needs=frozenset().union(*(NEEDS[m] for m in modes)),
        dense_k=longest(
            ("dense" in modes, depth),
            ("colbert" in modes, cfg.colbert_rerank_k),
            ("dense+sparse" in modes, cfg.hybrid_k),
            ("all" in modes, cfg.all_rerank_k),
        ),
        sparse_k=longest(
            ("sparse" in modes, depth),
            ("dense+sparse" in modes, cfg.hybrid_k),
            (hybrid_all, cfg.all_rerank_k),
        ),
        colbert_k=longest(
            ("colbert" in modes, cfg.colbert_rerank_k), ("all" in modes and not hybrid_all, cfg.all_rerank_k)
        ),
        hybrid_all=hybrid_all,
    )
