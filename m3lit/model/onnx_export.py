"""One ONNX graph with all three BGE-M3 outputs (``python -m m3lit.export ... format=onnx``).

The graph is :meth:`M3Model.forward` (BGE-M3, arXiv:2402.03216 §3.2) exported by ``torch.onnx.export``'s
dynamo exporter (the TorchScript exporter baked shape-dependent constants into the graph and gave wrong
outputs at other lengths), opset :data:`OPSET`, with dynamic batch B and length L:

==================  =====================  ==========================================================
name                shape, dtype           meaning
==================  =====================  ==========================================================
``input_ids``       (B, L) int64           right-padded token ids (input)
``attention_mask``  (B, L) int64           1 on real tokens (input)
``dense_vecs``      (B, H) float32         normalised CLS vectors
``sparse_weights``  (B, L) float32         per-token lexical weights, 0 at special tokens and padding
``token_ids``       (B, L) int64           the ids the sparse weights belong to
``colbert_vecs``    (B, L-1, Dc) float32   normalised token vectors for positions 1..L-1, 0 on padding
``colbert_mask``    (B, L-1) bool          True on real tokens (EOS included)
==================  =====================  ==========================================================

``quantize_int8`` (``onnx_int8=true`` on the command line) also writes ``model.int8.onnx`` beside it: ONNX
Runtime's dynamic quantisation (weights int8 per tensor, activations quantised per batch at run time) of
every MatMul and Gather (the embedding table), same inputs and outputs. It is about 4x smaller and faster
on CPU; its quality cost (dense cosine to fp32, retrieval nDCG@10) is measured in ``tests/integration/test_model_onnx.py``
and ``benchmarks/onnx_encode.py`` (README, performance section).

The per-text post-processing (max per token id, dropping zero weights, keeping real ColBERT rows) is the
loader's, :class:`m3lit.inference.onnx_runtime.OnnxM3Embedder`. The tokenizer files are written next to the graph.
Needs the optional extra ``onnx`` (``pip install 'm3lit[onnx]'``: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from m3lit.model import M3Model
from m3lit.model.export_folder import save_tokenizer

__all__ = [
    "INPUT_NAMES",
    "INT8_FILE",
    "ONNX_FILE",
    "OPSET",
    "OUTPUT_NAMES",
    "M3Graph",
    "export_onnx",
    "quantize_int8",
]

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"  # the dynamically quantised copy (quantize_int8)
OPSET = 18
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("dense_vecs", "sparse_weights", "token_ids", "colbert_vecs", "colbert_mask")
_PROTOBUF_LIMIT = 1_800_000_000  # one ONNX protobuf holds < 2 GiB; larger weights go to an external file


class M3Graph(nn.Module):
    """``M3Model`` with a tuple output in :data:`OUTPUT_NAMES` order (what the exporter traces)."""

    def __init__(self, model: M3Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids, attention_mask)
        return out.dense, out.sparse_weights, out.token_ids, out.colbert, out.colbert_mask


def export_onnx(model: M3Model, folder: str | os.PathLike) -> list[str]:
    """Write ``model.onnx`` (+ tokenizer files) for ``model`` (fp32, eval mode) to ``folder``.

    LoRA adapters are merged first (:mod:`m3lit.model.lora`). Returns the file names written.
    """
    from m3lit.model.lora import has_lora, merged_copy

    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency; fail with the fix, not a traceback)
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("format=onnx needs the optional extra: pip install 'm3lit[onnx]'") from error
    if has_lora(model.encoder):
        model = merged_copy(model)
    model = model.float().eval()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    example = model.tokenizer(
        ["a longer example text for tracing", "short"], padding=True, return_tensors="pt"
    )
    inputs = (example["input_ids"], example["attention_mask"].long())
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", min=2, max=model.max_length)
    dims = {0: batch, 1: length}
    with torch.no_grad():
        torch.onnx.export(
            M3Graph(model).eval(),  # eval: the wrapper too, or the exporter warns of training mode
            inputs,
            str(folder / ONNX_FILE),
            dynamo=True,
            opset_version=OPSET,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"input_ids": dims, "attention_mask": dims},
            external_data=_bytes(model) > _PROTOBUF_LIMIT,  # bge-m3 (2.2 GB): weights in model.onnx.data
            verbose=False,
        )
    save_tokenizer(model.tokenizer, folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def quantize_int8(folder: str | os.PathLike) -> Path:
    """Write ``folder/model.int8.onnx``: ``folder/model.onnx`` with int8 dynamic quantisation.

    ``onnxruntime.quantization.quantize_dynamic`` with its defaults (signed int8 weights, one scale per
    tensor, MatMul and Gather quantised); the outputs keep their names, shapes and float32 dtypes.
    Returns the written file.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder = Path(folder)
    source, target = folder / ONNX_FILE, folder / INT8_FILE
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no ONNX graph to quantise (export with format=onnx first)")
    quantize_dynamic(source, target, weight_type=QuantType.QInt8)  # bge-m3: ~0.6 GB, one protobuf
    return target


def _bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())
