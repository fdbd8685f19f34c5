"""Encoding a corpus shard by shard into the dense, sparse and ColBERT indices.

Passages (``passage_prefix`` prepended, ``pooling`` applied) are encoded ``shard_size`` at a time (:func:`m3lit.inference.encoding.encode_texts`: length-sorted batches,
inference mode), with a progress bar over shards when there are several, and each shard's outputs go
straight into the indices, so only one shard's float32 encoder outputs exist at a time:

- dense vectors -> :class:`DenseIndex` (one (N, D) array);
- MCLS dense vectors (``dense+mcls`` mode, App. B.2) -> a second :class:`DenseIndex`, from a second
  encoder pass with a CLS token every ``mcls_interval`` tokens (:mod:`m3lit.inference.mcls`);
- lexical weights -> :class:`SparseIndex` (CSR matrices);
- ColBERT vectors -> :class:`ColbertStore` (a float16 ragged array), when the whole corpus' vectors fit
  in ``colbert_store_max_gb`` (``colbert_store="auto"``) or ``colbert_store="memory"``. Otherwise nothing
  is kept in this pass and :func:`store_candidates` later encodes only the documents some query
  re-ranks (the union of the dense top-k lists): a second encoder pass over at most Q * k passages.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field

import numpy as np

from m3lit.inference.encoding import EncodedTexts, check_window, encode_texts, tokenize_texts
from m3lit.model import M3Model
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.index.colbert import ColbertStore
from m3lit.retrieval.index.dense import DenseIndex
from m3lit.retrieval.index.sparse import SparseIndex

__all__ = ["CorpusIndex", "encode_passages", "index_corpus", "store_candidates", "trim_heap"]

log = logging.getLogger(__name__)


@dataclass
class CorpusIndex:
    """The indices of one corpus; an index is None when no mode needs it.

    Attributes:
        dense: dense vectors.
        mcls: dense vectors of the passages encoded with multiple CLS tokens (``dense+mcls``).
        sparse: lexical weights.
        colbert: ColBERT vectors (every passage, or empty until :func:`store_candidates` fills it).
        info: ``colbert_store`` ("memory" or "reencode") and, for "auto", the size estimate in bytes.
    """

    dense: DenseIndex | None = None
    mcls: DenseIndex | None = None
    sparse: SparseIndex | None = None
    colbert: ColbertStore | None = None
    info: dict = field(default_factory=dict)


def index_corpus(
    model: M3Model,
    texts: Sequence[str],
    needs: set[str],
    cfg: RetrievalConfig,
    *,
    vocab: int,
    device=None,
    progress: bool = False,
) -> CorpusIndex:
    """Encode ``texts`` shard by shard into the indices named in ``needs`` (dense / mcls / sparse / colbert)."""
    n_docs = len(texts)
    out = CorpusIndex()
    if "dense" in needs:
        out.dense = _dense_index(model, n_docs, cfg)
    if "mcls" in needs:
        out.mcls = _dense_index(model, n_docs, cfg)
    if "sparse" in needs:
        out.sparse = SparseIndex(vocab)
    keep_colbert = False
    if "colbert" in needs:
        keep_colbert = _keep_colbert_in_memory(model, texts, cfg, out.info)
        out.colbert = ColbertStore(model.colbert_dim, n_docs, dtype=cfg.colbert_dtype)
    ordinary = out.dense is not None or out.sparse is not None or keep_colbert
    for start in _shards(n_docs, cfg.shard_size, progress, "corpus shards"):
        chunk = texts[start : start + cfg.shard_size]
        if ordinary:
            shard = encode_passages(
                model,
                chunk,
                cfg,
                device=device,
                progress=progress,
                dense=out.dense is not None,
                sparse=out.sparse is not None,
                colbert=keep_colbert,
            )
            if out.dense is not None:
                out.dense.add(shard.dense)
            if out.sparse is not None:
                out.sparse.add(shard.sparse)
            if keep_colbert:
                out.colbert.add(np.arange(start, start + len(shard.colbert)), shard.colbert)
            del shard
        if out.mcls is not None:
            mcls = encode_passages(model, chunk, cfg, device=device, progress=progress, mcls=True)
            out.mcls.add(mcls.dense)
            del mcls
        trim_heap()
    if out.sparse is not None and out.sparse.documents.nnz == 0:
        log.warning("every passage's lexical weights are 0: the sparse mode cannot find anything")
    return out


def store_candidates(
    model: M3Model,
    texts: Sequence[str],
    store: ColbertStore,
    candidates: np.ndarray,
    cfg: RetrievalConfig,
    *,
    device=None,
    progress: bool = False,
) -> None:
    """Encode and store the ColBERT vectors of every document in the (Q, k) ``candidates`` (-1 = none)."""
    needed = np.unique(candidates)
    needed = needed[(needed >= 0) & ~store.has(needed)]
    for start in _shards(len(needed), cfg.shard_size, progress, "colbert candidates"):
        chunk = needed[start : start + cfg.shard_size]
        shard = encode_passages(
            model, [texts[i] for i in chunk], cfg, device=device, progress=progress, dense=False, colbert=True
        )
        store.add(chunk, shard.colbert)
        del shard
        trim_heap()


def encode_passages(
    model: M3Model,
    texts: Sequence[str],
    cfg: RetrievalConfig,
    *,
    device=None,
    progress: bool = False,
    dense: bool = True,
    sparse: bool = False,
    colbert: bool = False,
    mcls: bool = False,
) -> EncodedTexts:
    """:func:`encode_texts` of passages with ``cfg``'s passage settings (length, prefix, pooling, batch size).

    ``mcls=True``: dense vectors only, with a CLS token every ``cfg.mcls_interval`` tokens (App. B.2), in one
    pass; otherwise passages longer than ``cfg.passage_window`` are encoded in windows.
    """
    check_window(None if mcls else cfg.passage_window, model.max_length, key="retrieval.passage_window")
    return encode_texts(
        model,
        texts,
        max_length=cfg.passage_max_len,
        batch_size=cfg.batch_size,
        device=device,
        progress=progress,
        dense=dense or mcls,
        sparse=sparse and not mcls,
        colbert=colbert and not mcls,
        mcls_interval=cfg.mcls_interval if mcls else None,
        pooling="cls" if mcls else cfg.pooling,
        prefix=cfg.passage_prefix,
        window=None if mcls else cfg.passage_window,
    )


def _dense_index(model: M3Model, n_docs: int, cfg: RetrievalConfig) -> DenseIndex:
    return DenseIndex(
        model.hidden_size, capacity=n_docs, dtype=cfg.dense_dtype, faiss_factory=cfg.faiss_factory
    )


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Encoding frees many mid-sized CPU buffers (activations, per-text arrays) that glibc otherwise keeps in
    its heap: at 10,000 passages that retained memory was larger than all the indices together.
    """
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):  # not glibc (e.g. musl)
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _shards(total: int, size: int, progress: bool, desc: str):
    starts = range(0, total, size)
    if progress and len(starts) > 1:
        from tqdm.auto import tqdm

        return tqdm(starts, desc=desc, unit="shard")
    return starts


def _keep_colbert_in_memory(model: M3Model, texts: Sequence[str], cfg: RetrievalConfig, info: dict) -> bool:
    """Decide where the corpus' ColBERT vectors live (``colbert_store``); record the choice in ``info``."""
    if cfg.colbert_store != "auto":
        info["colbert_store"] = cfg.colbert_store
        return cfg.colbert_store == "memory"
    max_length = min(cfg.passage_max_len, model.max_length)
    prefixed = [cfg.passage_prefix + t for t in texts] if cfg.passage_prefix else texts
    tokens = sum(len(ids) - 1 for ids in tokenize_texts(model.tokenizer, prefixed, max_length))  # CLS dropped
    estimate = tokens * model.colbert_dim * np.dtype(cfg.colbert_dtype).itemsize
    keep = estimate <= cfg.colbert_store_max_gb * 1e9
    info["colbert_store"] = "memory" if keep else "reencode"
    info["colbert_store_estimate_bytes"] = int(estimate)
    if not keep:
        log.info(
            "ColBERT vectors of the whole corpus would take %.1f GB > colbert_store_max_gb=%.1f: "
            "re-encoding the re-ranking candidates instead",
            estimate / 1e9,
            cfg.colbert_store_max_gb,
        )
    return keep
