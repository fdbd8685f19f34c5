"""``M3Embedder``: a drop-in replacement for FlagEmbedding's ``BGEM3FlagModel`` (v1.4.2 API).

Code written for ``FlagEmbedding.BGEM3FlagModel`` runs unchanged::

    from m3lit import M3Embedder as BGEM3FlagModel

    model = BGEM3FlagModel("path/to/export", use_fp16=True)
    out = model.encode(["What is BGE M3?"], return_dense=True, return_sparse=True, return_colbert_vecs=True)
    out["dense_vecs"]        # (N, H) np.ndarray, normalised
    out["lexical_weights"]   # list of {str(token_id): weight}
    out["colbert_vecs"]      # list of (n_tokens - 1, Dc) arrays
    model.compute_score([("q", "p")], weights_for_different_modes=[0.4, 0.2, 0.4])

Same constructor signature and defaults, same methods, return types and formulas (BGE-M3,
arXiv:2402.03216 §3.2; spec §5): ``encode``/``encode_queries``/``encode_corpus``,
``compute_lexical_matching_score``, ``colbert_score``, ``convert_id_to_token``, ``compute_score`` with
keys ``colbert``, ``sparse``, ``dense``, ``sparse+dense``, ``colbert+sparse+dense``. A single string in gives
un-batched outputs. Deliberate differences:

* loading also accepts a Lightning ``.ckpt`` and never unpickles arbitrary objects;
* the weights are kept in fp32 and cast to fp16/bf16 only on accelerators, so ``use_fp16=True`` on CPU is
  exact fp32 (FlagEmbedding loads fp16 weights and casts them back, losing precision); outputs are
  float32 arrays on every device;
* out-of-memory back-off (x3/4) applies to any batch, and only to real out-of-memory errors;
* length-sorted batches also end early to keep padding under 5% (:data:`m3lit.inference.encoding.MAX_PADDING`),
  and ``compute_score`` encodes each distinct text once; outputs differ from fixed batches by float
  rounding only (padding never changes a real token's output), and ``compute_score`` keeps
  FlagEmbedding's per-batch ColBERT padding semantics;
* several devices run as threads over per-device model copies instead of a process pool;
* a head-less folder (no ``sparse_linear.pt``/``colbert_linear.pt``) works for dense output and raises
  when sparse or ColBERT outputs are requested, instead of returning values from random heads;
* ``mcls_interval`` turns on multiple-CLS pooling for long documents (App. B.2, :mod:`m3lit.inference.mcls`);
  ``window`` encodes long texts as windows within an encoder's learnt positions (:mod:`m3lit.inference.windows`).
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from m3lit.inference.encoding import (
    MCLS_AND_WINDOW,
    EncodedTexts,
    check_window,
    encode_texts,
    sparse_to_dict,
)
from m3lit.inference.scoring import InferenceScoresMixin
from m3lit.model.training_checkpoint import load_model

__all__ = ["M3Embedder", "BGEM3FlagModel", "target_devices"]

log = logging.getLogger(__name__)

_ENCODE_OPTIONS = {
    "instruction",
    "instruction_format",
    "convert_to_numpy",
    "device",
    "mcls_interval",
    "window",
}


class M3Embedder(InferenceScoresMixin):
    """BGE-M3 inference with FlagEmbedding's ``BGEM3FlagModel`` interface.

    Args:
        model_name_or_path: m3lit export, FlagEmbedding output folder, hub id (``BAAI/bge-m3``) or ``.ckpt``.
        normalize_embeddings: L2-normalise dense and ColBERT vectors.
        use_fp16: run in float16 on accelerators (CPU always runs fp32).
        use_bf16: run in bfloat16 on accelerators (wins over ``use_fp16``).
        query_instruction_for_retrieval: prefix for queries in ``encode_queries`` (BGE-M3 uses none).
        query_instruction_format: how instruction and query are joined (``"{}{}"``).
        devices: None (every CUDA/MPS device, else CPU), a device string or int, or a list of them.
        pooling_method: only ``"cls"`` (what BGE-M3 uses).
        trust_remote_code: allow custom model code from the hub (off unless asked).
        cache_dir: Hugging Face cache folder for hub ids.
        colbert_dim: ColBERT width for a folder without head files (<= 0: hidden size).
        batch_size: default texts per forward pass.
        query_max_length / passage_max_length: default truncation lengths in tokens.
        return_dense / return_sparse / return_colbert_vecs: default outputs of ``encode*``.
        truncate_dim: keep only the first dims of dense and ColBERT vectors (re-normalised).
        mcls_interval: m3lit extension: insert a CLS token every this many tokens (None = off).
        window: m3lit extension: encode a text of more than this many tokens as windows of at most this many,
            merged into one output (None = one pass; for encoders that learnt fewer positions than the text).
            At most the model's positions; ``query_max_length`` / ``passage_max_length`` then cap the tokens
            read of a text, and may exceed the positions. Not with ``mcls_interval`` (``ValueError``).
        **kwargs: stored as attributes, as FlagEmbedding does (``passage_instruction_for_retrieval`` and
            ``passage_instruction_format`` are used by ``encode_corpus``).
    """

    DEFAULT_POOLING_METHOD = "cls"

    def __init__(
        self,
        model_name_or_path: str,
        normalize_embeddings: bool = True,
        use_fp16: bool = True,
        use_bf16: bool = False,
        query_instruction_for_retrieval: str | None = None,
        query_instruction_format: str = "{}{}",
        devices: str | int | list[str] | list[int] | None = None,
        pooling_method: str = "cls",
        trust_remote_code: bool = False,
        cache_dir: str | None = None,
        colbert_dim: int = -1,
        batch_size: int = 256,
        query_max_length: int = 512,
        passage_max_length: int = 512,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert_vecs: bool = False,
        truncate_dim: int | None = None,
        mcls_interval: int | None = None,
        window: int | None = None,
        **kwargs: Any,
    ) -> None:
        if pooling_method != "cls":
            raise ValueError(f"pooling_method={pooling_method!r}: BGE-M3 models use 'cls' pooling only")
        if window is not None and mcls_interval is not None:
            raise ValueError(f"M3Embedder: {MCLS_AND_WINDOW}")
        check_window(window)  # its size now, the model's positions once loaded
        self.model_name_or_path = model_name_or_path
        self.normalize_embeddings = normalize_embeddings
        self.use_fp16, self.use_bf16 = use_fp16, use_bf16
        self.query_instruction_for_retrieval = query_instruction_for_retrieval
        self.query_instruction_format = query_instruction_format
        self.target_devices = target_devices(devices)
        self.pooling_method = pooling_method
        self.batch_size = batch_size
        self.query_max_length, self.passage_max_length = query_max_length, passage_max_length
        self.return_dense, self.return_sparse = return_dense, return_sparse
        self.return_colbert_vecs = return_colbert_vecs
        self.truncate_dim = truncate_dim
        self.mcls_interval = mcls_interval
        self.window = window
        for key, value in kwargs.items():
            setattr(self, key, value)
        self.kwargs = kwargs
        self.model = load_model(
            model_name_or_path,
            colbert_dim=colbert_dim,
            normalize=normalize_embeddings,
            trust_remote_code=trust_remote_code,
            cache_dir=cache_dir,
        ).eval()
        self.model.float()
        check_window(window, self.model.max_length)
        self.tokenizer = self.model.tokenizer
        self._replicas: dict[str, torch.nn.Module] = {}

    # ------------------------------------------------------------------------------------ encoding
    def encode_queries(
        self,
        queries: list[str] | str,
        batch_size: int | None = None,
        max_length: int | None = None,
        return_dense: bool | None = None,
        return_sparse: bool | None = None,
        return_colbert_vecs: bool | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """``encode`` with ``query_max_length`` and the query instruction (if any)."""
        return self.encode(
            queries,
            batch_size=batch_size,
            max_length=self.query_max_length if max_length is None else max_length,
            return_dense=return_dense,
            return_sparse=return_sparse,
            return_colbert_vecs=return_colbert_vecs,
            instruction=self.query_instruction_for_retrieval,
            instruction_format=self.query_instruction_format,
            **kwargs,
        )

    def encode_corpus(
        self,
        corpus: list[str] | str,
        batch_size: int | None = None,
        max_length: int | None = None,
        return_dense: bool | None = None,
        return_sparse: bool | None = None,
        return_colbert_vecs: bool | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """``encode`` with ``passage_max_length`` and the passage instruction (if any)."""
        return self.encode(
            corpus,
            batch_size=batch_size,
            max_length=self.passage_max_length if max_length is None else max_length,
            return_dense=return_dense,
            return_sparse=return_sparse,
            return_colbert_vecs=return_colbert_vecs,
            instruction=self.kwargs.get("passage_instruction_for_retrieval"),
            instruction_format=self.kwargs.get("passage_instruction_format", "{}{}"),
            **kwargs,
        )

    def encode(
        self,
        sentences: list[str] | str,
        batch_size: int | None = None,
        max_length: int | None = None,
        return_dense: bool | None = None,
        return_sparse: bool | None = None,
        return_colbert_vecs: bool | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Encode texts; returns ``{"dense_vecs", "lexical_weights", "colbert_vecs"}`` (None if not asked).

        Args:
            sentences: a list of texts, or one text (then every output is un-batched).
            batch_size / max_length: default to the constructor's ``batch_size`` / ``passage_max_length``.
            return_dense / return_sparse / return_colbert_vecs: default to the constructor's values.
            **kwargs: ``instruction``/``instruction_format`` (prefix every text), ``device`` (run on this
                device only), ``mcls_interval``, ``window``, ``convert_to_numpy`` (ignored: outputs are numpy).
        """
        unknown = set(kwargs) - _ENCODE_OPTIONS
        if unknown:
            raise TypeError(f"encode() got unexpected keyword arguments {sorted(unknown)}")
        dense = self.return_dense if return_dense is None else return_dense
        sparse = self.return_sparse if return_sparse is None else return_sparse
        colbert = self.return_colbert_vecs if return_colbert_vecs is None else return_colbert_vecs
        if not (dense or sparse or colbert):
            raise ValueError(
                "Must choose one or more from `return_colbert_vecs`, `return_sparse`, `return_dense`"
            )
        self._check_heads(sparse, colbert)
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        if kwargs.get("instruction") is not None:
            texts = [
                _with_instruction(kwargs.get("instruction_format") or "{}{}", kwargs["instruction"], t)
                for t in texts
            ]
        options = {
            "batch_size": self.batch_size if batch_size is None else batch_size,
            "max_length": self.passage_max_length if max_length is None else max_length,
            "dense": dense,
            "sparse": sparse,
            "colbert": colbert,
            "mcls_interval": kwargs.get("mcls_interval", self.mcls_interval),
            "window": kwargs.get("window", self.window),
        }
        devices = [kwargs["device"]] if kwargs.get("device") is not None else self.target_devices
        encoded = self._encode_on_devices(texts, devices, options)
        return self._to_flag_output(encoded, single, dense, sparse, colbert)

    def _encode_on_devices(self, texts: list[str], devices: list[str], options: dict) -> EncodedTexts:
        if len(devices) == 1 or len(texts) <= 1:
            return encode_texts(self._replica(devices[0]), texts, device=devices[0], **options)
        size = -(-len(texts) // len(devices))
        chunks = [(texts[i : i + size], devices[j]) for j, i in enumerate(range(0, len(texts), size))]
        with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
            parts = list(
                pool.map(lambda c: encode_texts(self._replica(c[1]), c[0], device=c[1], **options), chunks)
            )
        return EncodedTexts(
            dense=np.concatenate([p.dense for p in parts]) if options["dense"] else None,
            sparse=[row for p in parts for row in p.sparse] if options["sparse"] else None,
            colbert=[row for p in parts for row in p.colbert] if options["colbert"] else None,
            batch_size=min(p.batch_size for p in parts),
        )

    def _to_flag_output(self, encoded: EncodedTexts, single: bool, dense: bool, sparse: bool, colbert: bool):
        dense_vecs = lexical = colbert_vecs = None
        if dense:
            dense_vecs = self._truncate(encoded.dense)
        if sparse:
            lexical = [defaultdict(int, sparse_to_dict(ids, weights)) for ids, weights in encoded.sparse]
        if colbert:
            colbert_vecs = [self._truncate(vecs) for vecs in encoded.colbert]
        if single:
            dense_vecs = None if dense_vecs is None else dense_vecs[0]
            lexical = None if lexical is None else lexical[0]
            colbert_vecs = None if colbert_vecs is None else colbert_vecs[0]
        return {"dense_vecs": dense_vecs, "lexical_weights": lexical, "colbert_vecs": colbert_vecs}

    def _truncate(self, vecs: np.ndarray) -> np.ndarray:
        """Keep the first ``truncate_dim`` dims; re-normalise (FlagEmbedding truncates before normalising)."""
        if self.truncate_dim is None:
            return vecs
        vecs = vecs[..., : self.truncate_dim]
        if self.normalize_embeddings:
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=-1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    # ------------------------------------------------------------------------------------ devices
    def _replica(self, device: str | torch.device) -> torch.nn.Module:
        """The model on ``device`` in the inference dtype (fp32 on CPU; fp16/bf16 on accelerators if asked)."""
        device = torch.device(device)
        dtype = torch.float32
        if device.type != "cpu":
            dtype = torch.bfloat16 if self.use_bf16 else torch.float16 if self.use_fp16 else torch.float32
        key = f"{device}/{dtype}"
        if key not in self._replicas:
            if device.type == "cpu" and dtype == torch.float32:
                self._replicas[key] = self.model  # the fp32 master copy itself
            else:
                self._replicas[key] = copy.deepcopy(self.model).to(device=device, dtype=dtype).eval()
        return self._replicas[key]

    def stop_self_pool(self) -> None:
        """Free the per-device copies (FlagEmbedding's name for releasing its worker pool)."""
        self._replicas.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _check_heads(self, sparse: bool, colbert: bool) -> None:
        if (sparse or colbert) and not self.model.heads_loaded:
            raise ValueError(
                f"{self.model_name_or_path} has no trained sparse/ColBERT heads (sparse_linear.pt and "
                "colbert_linear.pt missing), so only dense outputs are meaningful: call with "
                "return_sparse=False, return_colbert_vecs=False"
            )


#: FlagEmbedding's public name for the same class.
BGEM3FlagModel = M3Embedder


def target_devices(devices: str | int | Sequence[str] | Sequence[int] | None) -> list[str]:
    """FlagEmbedding's device list: None -> every CUDA (else MPS, else CPU) device; int -> ``cuda:i``."""
    if devices is None:
        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if torch.backends.mps.is_available():
            return ["mps"]
        return ["cpu"]
    if isinstance(devices, str):
        return [devices]
    if isinstance(devices, int):
        return [f"cuda:{devices}"]
    if isinstance(devices, Sequence) and devices and all(isinstance(d, (str, int)) for d in devices):
        return [d if isinstance(d, str) else f"cuda:{d}" for d in devices]
    raise ValueError("devices should be a string or an integer or a list of strings or a list of integers.")


def _with_instruction(instruction_format: str, instruction: str, text: str) -> str:
    return instruction_format.replace("\\n", "\n").format(instruction, text)
