"""Inference: trained model in, embeddings and scores out (BGE-M3, arXiv:2402.03216 §3.2, App. B.2).

Modules: :mod:`~m3lit.inference.embedder` (``M3Embedder``, the ``BGEM3FlagModel`` drop-in),
:mod:`~m3lit.inference.scoring` (its score methods), :mod:`~m3lit.inference.encoding` (the batched encode
loop every caller shares), :mod:`~m3lit.inference.mcls` (multiple-CLS pooling for long texts) and
:mod:`~m3lit.inference.onnx_runtime` (``OnnxM3Embedder``, the same API over an ONNX export).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Imported on first use: `import m3lit.inference.encoding` should not load the embedder or ONNX Runtime.
_LAZY = {
    "M3Embedder": "m3lit.inference.embedder",
    "BGEM3FlagModel": "m3lit.inference.embedder",
    "OnnxM3Embedder": "m3lit.inference.onnx_runtime",
    "EncodedTexts": "m3lit.inference.encoding",
    "encode_texts": "m3lit.inference.encoding",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'm3lit.inference' has no attribute {name!r}")
