"""Inference: trained model in, embeddings and scores out (BGE-M3, arXiv:2402.03216 §3.2, App. B.2).

Modules: :mod:`~m3lit.inference.embedder` (``M3Embedder``, the ``BGEM3FlagModel`` drop-in),
:mod:`~m3lit.inference.scoring` (its score methods), :mod:`~m3lit.inference.encoding` (the batched encode
loop every caller shares), :mod:`~m3lit.inference.mcls` (multiple-CLS pooling for long texts) and
:mod:`~m3lit.inference.onnx_runtime` (``OnnxM3Embedder``, the same API over an ONNX export).
"""
