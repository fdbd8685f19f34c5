"""The mteb model of one retrieval mode of an m3lit model: mteb's encoder and search protocols at once.

:class:`M3MtebModel` implements mteb 2.x's ``EncoderProtocol`` (``encode`` -> the dense vectors, with mteb's
cosine ``similarity``) and its ``SearchProtocol`` (``index`` / ``search``). mteb's retrieval tasks call the
search protocol when a model has it, so they run in the adapter's mode through the :class:`M3Search` that
all the adapters of one model share (the corpus indexed once, every mode ranked from one search). Every
other task type mteb runs on an encoder (STS, classification, clustering, bitext mining, pair
classification) and reranking tasks (a retrieval task with candidate lists) get the dense vectors (BGE-M3,
arXiv:2402.03216, §3.2 Eq. 1: the normalised CLS state). Each mode is its own mteb model, named
``<name>__<mode>`` (:func:`mode_suffix`), so mteb writes one result folder per mode.

>>> mode_suffix("dense+sparse")
'__dense_sparse'
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.models.search_wrappers import SearchEncoderWrapper
from mteb.types import PromptType

from m3lit.inference.encoding import encode_texts
from m3lit.model import M3Model
from m3lit.model.device import resolve_dtype
from m3lit.model.training_checkpoint import load_model
from m3lit.mteb.search import M3Search, document_text
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.modes import MODEL_MODES

__all__ = ["M3MtebModel", "model_meta", "mode_suffix", "mteb_models", "weights_revision"]

#: mteb's model types of each mode (``ModelMeta.model_type``).
MODEL_TYPES = {
    "dense": ["dense"],
    "sparse": ["sparse"],
    "colbert": ["late-interaction"],
    "dense+sparse": ["dense", "sparse"],
    "all": ["dense", "sparse", "late-interaction"],
}


def mode_suffix(mode: str) -> str:
    """What a mode adds to the model's name in mteb: ``__dense``, ``__dense_sparse``, ``__all``, ..."""
    return "__" + mode.replace("+", "_")


def weights_revision(model: M3Model) -> str:
    """The first 12 hex digits of the sha256 of the model's weights (every tensor, in state-dict order):
    the revision mteb files the results under, the same whichever way the model was loaded."""
    hasher = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        hasher.update(name.encode("utf-8"))
        hasher.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return hasher.hexdigest()[:12]


def model_meta(
    model: M3Model, *, name: str, mode: str, revision: str, languages: Sequence[str] | None = None
) -> ModelMeta:
    """mteb's :class:`ModelMeta` of ``model`` evaluated in ``mode``: name ``<name>__<mode>``, the revision,
    languages (ISO 639-3 + script, e.g. ``eng-Latn``; None: not stated), the dense vector's size, the longest
    input, the parameter count and PyTorch as the framework."""
    parameters = sum(p.numel() for p in model.parameters())
    memory = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    return ModelMeta(
        loader=None,
        name=name + mode_suffix(mode),
        revision=revision,
        release_date=None,
        languages=list(languages) if languages else None,
        n_parameters=parameters,
        memory_usage_mb=round(memory, 1),
        max_tokens=model.max_length,
        embed_dim=model.hidden_size,
        license=None,
        open_weights=None,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch"],
        reference="https://arxiv.org/abs/2402.03216",
        similarity_fn_name="cosine",
        use_instructions=False,
        training_datasets=None,
        model_type=MODEL_TYPES[mode],
    )


class M3MtebModel(AbsEncoder):
    """One retrieval mode of an m3lit model as an mteb model (see the module docstring).

    Args:
        search: the shared :class:`M3Search` (model, retrieval settings, modes).
        mode: this adapter's retrieval mode (one of ``search.modes`` for retrieval tasks; ``dense`` serves
            every other task type whatever the search ranks).
        meta: its mteb metadata (:func:`model_meta`).
    """

    def __init__(self, search: M3Search, mode: str, meta: ModelMeta) -> None:
        self.search_engine, self.mode, self.mteb_model_meta = search, mode, meta
        self.model = search.model
        self._corpus = None  # mteb's corpus Dataset, for reranking tasks (dense, through mteb's wrapper)

    # ---------------------------------------------------------------------------- EncoderProtocol
    def encode(
        self,
        inputs,
        *,
        task_metadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """(N, H) float32 dense vectors of the texts of mteb's batches; queries with the query prefix and
        length, anything else with the passage ones."""
        cfg = self.search_engine.config
        query = prompt_type == PromptType.query
        texts = [text for batch in inputs for text in batch["text"]]
        encoded = encode_texts(
            self.model,
            texts,
            batch_size=cfg.batch_size,
            max_length=cfg.query_max_len if query else cfg.passage_max_len,
            device=self.search_engine.device,
            pooling=cfg.pooling,
            prefix=cfg.query_prefix if query else cfg.passage_prefix,
        )
        return encoded.dense

    # ----------------------------------------------------------------------------- SearchProtocol
    def index(self, corpus, *, task_metadata, hf_split: str, hf_subset: str, encode_kwargs, **kwargs) -> None:
        """Hand the corpus (mteb's Dataset: ``id``, ``text``, optional ``title``) to the shared search."""
        self._corpus = (corpus, dict(task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset))
        titles = corpus["title"] if "title" in corpus.column_names else [""] * len(corpus)
        texts = [document_text(title, text) for title, text in zip(titles, corpus["text"], strict=True)]
        self.search_engine.index(corpus["id"], texts)

    def search(
        self,
        queries,
        *,
        task_metadata,
        hf_split: str,
        hf_subset: str,
        top_k: int,
        encode_kwargs,
        top_ranked=None,
        **kwargs,
    ) -> dict[str, dict[str, float]]:
        """mteb's run of this mode: query id -> {document id: score}; with ``top_ranked`` (a reranking task)
        the candidates are re-ranked by the dense vectors through mteb's own encoder search."""
        if top_ranked is not None:
            return self._rerank_dense(queries, top_k, encode_kwargs, top_ranked, kwargs.get("num_proc"))
        return self.search_engine.search(self.mode, queries["id"], queries["text"], top_k)

    def _rerank_dense(self, queries, top_k: int, encode_kwargs, top_ranked, num_proc) -> dict:
        corpus, where = self._corpus
        wrapper = SearchEncoderWrapper(self)
        wrapper.index(corpus, encode_kwargs=encode_kwargs, num_proc=num_proc, **where)
        return wrapper.search(
            queries,
            top_k=top_k,
            encode_kwargs=encode_kwargs,
            top_ranked=top_ranked,
            num_proc=num_proc,
            **where,
        )


def mteb_models(
    model: M3Model | str,
    modes: Sequence[str] = MODEL_MODES,
    retrieval: RetrievalConfig | dict | None = None,
    *,
    name: str | None = None,
    languages: Sequence[str] | None = None,
    device=None,
    dtype: str = "float32",
    progress: bool = False,
) -> dict[str, M3MtebModel]:
    """mteb models of an m3lit model, one per retrieval mode, sharing one :class:`M3Search`.

    Args:
        model: an :class:`M3Model`, or what loads one (:func:`m3lit.model.training_checkpoint.load_model`:
            an export or FlagEmbedding folder, a ``.ckpt``, a hub id or an ``m3lit:NAME`` reference).
        modes: the retrieval modes (any of :data:`~m3lit.retrieval.modes.MODEL_MODES`); without trained
            sparse/ColBERT heads only ``dense`` is kept, with a loud warning.
        retrieval: retrieval settings, as ``configs/evaluate.yaml``'s ``retrieval`` block (fusion weights,
            re-ranking depths, lengths, prefixes).
        name: the model's name in mteb (default: the reference's last two path parts, or ``m3lit-model``).
        languages: the model's languages for its metadata (e.g. ``["eng-Latn"]``).
        device: where to encode (None: the GPU when there is one, else the CPU).
        dtype: weights for encoding (``float32``, ``float16``, ``bfloat16``).
        progress: progress bars while encoding a corpus.

    Returns:
        mode -> its mteb model (``mteb.evaluate(models["all"], tasks)``), in the order of ``modes``.
    """
    if isinstance(model, str | bytes) or hasattr(model, "__fspath__"):
        reference = str(model)
        name = name or "/".join(Path(reference).parts[-2:])
        model = load_model(reference, key="model")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device=device, dtype=resolve_dtype(dtype)).eval()
    search = M3Search(model, modes, RetrievalConfig.from_mapping(retrieval), device=device, progress=progress)
    revision = weights_revision(model)
    return {
        mode: M3MtebModel(
            search,
            mode,
            model_meta(model, name=name or "m3lit-model", mode=mode, revision=revision, languages=languages),
        )
        for mode in search.modes
    }
