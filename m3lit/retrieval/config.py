"""Settings of the retrieval evaluation: encoding, index, candidate depths and fusion weights per mode.

Defaults follow the paper's evaluation (BGE-M3, arXiv:2402.03216 §4, footnotes of Tables 1-4) and
FlagEmbedding's MKQA/MLDR scripts (spec §6):

- Multi-vec: re-rank the dense top-200 by MaxSim (paper).
- Dense+Sparse: union of the dense and sparse top-1000 lists (paper, MKQA and MLDR scripts), re-scored
  with dense 1.0 / sparse 0.3 (MKQA script; the same 0.3 as the training ensemble s_inter).
  Long-document sets (MLDR) used 0.2 / 0.8.
- All: re-rank the dense top-200 (paper's Multi-vec depth, MLDR script) with dense 1.0 / sparse 0.3 /
  ColBERT 1.0 (MKQA script and FlagEmbedding's ``compute_score`` example). MLDR used 0.15 / 0.5 / 0.35.
  ``all_candidates="hybrid"`` re-ranks the union of the dense and sparse top-200 instead, the candidates
  of FlagEmbedding's alternative ``hybrid_all_results.py`` script: a passage only the lexical head finds
  can then reach the All list (it never can from the dense top-200 alone).
- Lengths 512/512 are FlagEmbedding's inference defaults (MLDR evaluated passages up to 8192 tokens).
- Dense+MCLS: passages get a CLS token every 256 tokens (App. B.2, :mod:`m3lit.inference.mcls`).
- Released-model baselines: ``pooling="mean"`` (attention-mask mean of the last hidden states, then L2
  normalisation) and the ``query_prefix`` / ``passage_prefix`` a model was trained with, e.g. multilingual-e5
  (``"query: "`` / ``"passage: "``). BGE-M3 itself uses CLS pooling and no prefixes (the defaults).

Every field is a plain value so the whole config round-trips through YAML/OmegaConf
(``configs/evaluate.yaml`` holds the same keys under ``retrieval:``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from m3lit.inference.encoding import POOLINGS

__all__ = ["ALL_CANDIDATES", "LENGTH_ALIASES", "RetrievalConfig"]

log = logging.getLogger(__name__)

#: Deprecated spellings of the truncation lengths -> the one spelling of every command: the training config's
#: ``data.query_max_len`` / ``data.passage_max_len`` (FlagEmbedding's training arguments; mining's
#: ``--query-max-len``). ``evaluate``'s ``retrieval.*_max_length`` keys are the deprecated forms.
LENGTH_ALIASES = {"query_max_length": "query_max_len", "passage_max_length": "passage_max_len"}

#: Where the All mode's candidates come from (:attr:`RetrievalConfig.all_candidates`).
ALL_CANDIDATES = ("dense", "hybrid")


@dataclass
class RetrievalConfig:
    """All knobs of :func:`m3lit.retrieval.evaluate_retrieval`; see the module docstring for the sources."""

    #: texts per forward pass (encode_texts shrinks it on out-of-memory)
    batch_size: int = 256
    #: query truncation in tokens (FlagEmbedding inference default)
    query_max_len: int = 512
    #: passage truncation in tokens (raise for long documents; MLDR used 8192)
    passage_max_len: int = 512
    #: passages encoded + indexed per shard: bounds the float32 encoder outputs held at once
    shard_size: int = 2048
    #: storage of the corpus dense vectors: float32 (exact) or float16 (half the memory)
    dense_dtype: str = "float32"
    #: faiss index_factory string for the dense search (e.g. "HNSW32", "IVF4096,Flat"); None = exact search
    faiss_factory: str | None = None
    #: Multi-vec: dense candidates re-ranked by MaxSim (paper: top-200)
    colbert_rerank_k: int = 200
    #: where ColBERT vectors live: "memory" (every passage), "reencode" (candidates only, second pass), "auto"
    colbert_store: str = "auto"
    #: "auto" keeps every passage's ColBERT vectors when they fit in this many GB
    colbert_store_max_gb: float = 4.0
    #: storage of ColBERT vectors (MaxSim is computed in float32)
    colbert_dtype: str = "float16"
    #: Dense+Sparse: depth of each list whose union is re-scored (paper: top-1000)
    hybrid_k: int = 1000
    #: Dense+Sparse weights (w_dense, w_sparse): MKQA script; MLDR used (0.2, 0.8)
    hybrid_weights: tuple[float, float] = (1.0, 0.3)
    #: All: the candidates re-ranked by the weighted sum of the three scores: the top-``all_rerank_k`` of each list
    all_rerank_k: int = 200
    #: All's candidate lists: "dense" (the dense top-k; paper footnotes, MKQA/MLDR scripts) or "hybrid" (the union
    #: of the dense and the sparse top-k, as Dense+Sparse; FlagEmbedding's hybrid_all_results.py), which lets a
    #: passage that only the lexical head finds be re-ranked
    all_candidates: str = "dense"
    #: All weights (w_dense, w_sparse, w_colbert): MKQA script; MLDR used (0.15, 0.5, 0.35)
    all_weights: tuple[float, float, float] = (1.0, 0.3, 1.0)
    #: BM25 term-frequency saturation (Anserini/Pyserini default)
    bm25_k1: float = 0.9
    #: BM25 length normalisation (Anserini/Pyserini default)
    bm25_b: float = 0.4
    #: dense vector: "cls" (BGE-M3) or "mean" (mask-weighted mean of the last hidden states; dense/bm25 modes only)
    pooling: str = "cls"
    #: prepended to every query before tokenisation (multilingual-e5: "query: ")
    query_prefix: str = ""
    #: prepended to every passage before tokenisation, not for BM25 (multilingual-e5: "passage: ")
    passage_prefix: str = ""
    #: Dense+MCLS: a CLS token every this many passage tokens (paper App. B.2: 256)
    mcls_interval: int = 256
    #: encode a passage of more than this many tokens as consecutive windows of at most this many, merged into
    #: one output (m3lit.inference.windows), for encoders whose learnt positions end before passage_max_len
    #: (multilingual-e5-small: 512); at most the model's positions, while passage_max_len (the tokens read) may
    #: exceed them; None = one pass (the paper). Dense+MCLS always encodes in one pass
    passage_window: int | None = None

    def __post_init__(self) -> None:
        self.hybrid_weights = tuple(float(w) for w in self.hybrid_weights)
        self.all_weights = tuple(float(w) for w in self.all_weights)
        if len(self.hybrid_weights) != 2:
            raise ValueError(f"hybrid_weights needs 2 values (dense, sparse), got {self.hybrid_weights}")
        if len(self.all_weights) != 3:
            raise ValueError(f"all_weights needs 3 values (dense, sparse, colbert), got {self.all_weights}")
        if self.colbert_store not in ("auto", "memory", "reencode"):
            raise ValueError(f"colbert_store must be auto, memory or reencode, got {self.colbert_store!r}")
        if self.all_candidates not in ALL_CANDIDATES:
            raise ValueError(
                f"all_candidates must be one of {list(ALL_CANDIDATES)}, got {self.all_candidates!r}"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")
        for name in ("query_prefix", "passage_prefix"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in (
            "batch_size",
            "query_max_len",
            "passage_max_len",
            "shard_size",
            "colbert_rerank_k",
            "hybrid_k",
            "all_rerank_k",
            "mcls_interval",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.passage_window is not None and int(self.passage_window) < 3:
            raise ValueError(
                f"passage_window must be >= 3 (<s>, a token, </s>) or null, got {self.passage_window}"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> RetrievalConfig:
        """Build from a dict/DictConfig; unknown keys are an error (a typo must not pass silently).

        The length keys are spelt ``query_max_len`` / ``passage_max_len`` as in every m3lit command; the
        deprecated ``*_max_length`` spellings (:data:`LENGTH_ALIASES`) still work, with a warning."""
        if values is None:
            return cls()
        if isinstance(values, RetrievalConfig):
            return values
        for old in sorted(set(map(str, values)) & set(LENGTH_ALIASES)):
            log.warning(
                "retrieval: %s is deprecated, use %s (the same key in every m3lit command)",
                old,
                LENGTH_ALIASES[old],
            )
        values = {LENGTH_ALIASES.get(str(k), str(k)): v for k, v in values.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown retrieval option(s) {unknown}; known: {sorted(known)}")
        return cls(**{str(k): v for k, v in values.items()})  # weight lists become tuples in __post_init__

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
