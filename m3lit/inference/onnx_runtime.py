"""``OnnxM3Embedder``: run an ONNX export (:mod:`m3lit.model.onnx_export`) in ONNX Runtime, ``BGEM3FlagModel``-style.

::

    from m3lit.inference.onnx_runtime import OnnxM3Embedder

    model = OnnxM3Embedder("export_onnx/")          # the folder (or its model.onnx)
    model = OnnxM3Embedder("export_onnx/", int8=True)  # its model.int8.onnx (export onnx_int8=true)
    out = model.encode(["What is BGE M3?"], return_sparse=True, return_colbert_vecs=True)
    out["dense_vecs"]        # (N, H) float32
    out["lexical_weights"]   # [{str(token_id): weight}], max per id, special tokens dropped, weights > 0
    out["colbert_vecs"]      # [(n_tokens - 1, Dc) float32]

Texts are tokenised and truncated as :func:`m3lit.inference.encoding.encode_texts` does, sorted longest first, cut
into right-padded batches of ``batch_size`` and put back in input order; the lexical weights go through
the same :func:`~m3lit.inference.sparse_pool.sparse_rows` / :func:`~m3lit.inference.encoding.sparse_to_dict`, so the output
equals :meth:`m3lit.inference.embedder.M3Embedder.encode` up to float rounding. Needs ``onnxruntime``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer

from m3lit.inference.encoding import pad_batch, sparse_to_dict, tokenize_texts
from m3lit.inference.sparse_pool import sparse_rows
from m3lit.model.onnx_export import INPUT_NAMES, INT8_FILE, ONNX_FILE, OUTPUT_NAMES

__all__ = ["OnnxM3Embedder"]


class OnnxM3Embedder:
    """An ONNX M3 graph + its tokenizer.

    Args:
        path: the export folder (``model.onnx`` + tokenizer files), or an ``.onnx`` file inside it.
        providers: ONNX Runtime execution providers (default: CPU).
        threads: intra-op threads (None: ONNX Runtime's default).
        int8: with a folder ``path``, load its ``model.int8.onnx`` (``onnx_int8=true`` export) instead.

    Raises:
        FileNotFoundError: no ONNX file at ``path``.
        ValueError: the file is not a readable ONNX graph, or not one with m3lit's inputs and outputs.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        providers: list[str] | None = None,
        threads: int | None = None,
        int8: bool = False,
    ):
        import onnxruntime as ort

        path = Path(path)
        graph = path / (INT8_FILE if int8 else ONNX_FILE) if path.is_dir() else path
        if not graph.is_file():
            raise FileNotFoundError(
                f"{graph}: no ONNX graph (write one with python -m m3lit.export format=onnx"
                f"{' onnx_int8=true' if int8 else ''})"
            )
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(graph), sess_options=options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own (pybind) exception types
            raise ValueError(
                f"{graph}: not a readable ONNX graph ({type(error).__name__}: {error})"
            ) from None
        inputs = tuple(i.name for i in self.session.get_inputs())
        outputs = tuple(o.name for o in self.session.get_outputs())
        if inputs != INPUT_NAMES or outputs != OUTPUT_NAMES:
            raise ValueError(
                f"{graph}: inputs {list(inputs)} / outputs {list(outputs)}; an m3lit export has "
                f"{list(INPUT_NAMES)} / {list(OUTPUT_NAMES)}"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(str(graph.parent))
        provenance = graph.parent / "m3lit.json"
        record = json.loads(provenance.read_text(encoding="utf-8")) if provenance.is_file() else {}
        self.max_length = int(record.get("max_length") or self.tokenizer.model_max_length)

    def encode(
        self,
        sentences: list[str] | str,
        batch_size: int = 256,
        max_length: int = 512,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert_vecs: bool = False,
    ) -> dict[str, Any]:
        """``{"dense_vecs", "lexical_weights", "colbert_vecs"}`` as ``BGEM3FlagModel.encode`` (None if not asked)."""
        if not (return_dense or return_sparse or return_colbert_vecs):
            raise ValueError(
                "Must choose one or more from `return_colbert_vecs`, `return_sparse`, `return_dense`"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        ids = tokenize_texts(self.tokenizer, texts, min(max_length, self.max_length))
        order = np.argsort([-len(row) for row in ids], kind="stable")  # longest first: little padding
        dense, lexical, colbert = [None] * len(ids), [None] * len(ids), [None] * len(ids)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids, mask = pad_batch([ids[i] for i in rows], self.tokenizer.pad_token_id)
            feeds = {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()}
            vecs, weights, token_ids, multi, keep = self.session.run(list(OUTPUT_NAMES), feeds)
            for j, i in enumerate(rows):
                dense[i], colbert[i] = vecs[j], multi[j][keep[j]]
            for i, (uniq, best) in zip(rows, sparse_rows(weights, token_ids), strict=True):
                lexical[i] = defaultdict(int, sparse_to_dict(uniq, best))
        out = {
            "dense_vecs": np.stack(dense).astype(np.float32) if return_dense and dense else None,
            "lexical_weights": lexical if return_sparse else None,
            "colbert_vecs": colbert if return_colbert_vecs else None,
        }
        if single:
            out = {k: None if v is None else v[0] for k, v in out.items()}
        return out
