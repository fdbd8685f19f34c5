"""ONNX export (``format=onnx``): one graph, three outputs, equal to the PyTorch model in ONNX Runtime."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from m3_reference import assert_lexical_close

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from m3lit import M3Embedder  # noqa: E402
from m3lit.export import export, main  # noqa: E402
from m3lit.inference.onnx_runtime import OnnxM3Embedder  # noqa: E402
from m3lit.model.onnx_export import INT8_FILE, ONNX_FILE, OUTPUT_NAMES  # noqa: E402


@pytest.fixture(scope="module")
def exported(tokenizer, tiny_config, tmp_path_factory):
    """A tiny model folder (with heads) and its ONNX export, written by the command line."""
    from m3lit.model import M3Model

    torch.manual_seed(0)
    model = M3Model.from_config(tiny_config, tokenizer, colbert_dim=16)
    with torch.no_grad():  # a sparse head whose weights are mostly > 0 (the fresh one is ~half zero)
        model.sparse_head.linear.bias.fill_(0.3)
    source = tmp_path_factory.mktemp("model")
    model.save_pretrained(source)
    folder = tmp_path_factory.mktemp("onnx") / "out"
    assert main([f"model={source}", f"output_dir={folder}", "format=onnx", "onnx_int8=true"]) == 0
    return source, folder


def _texts():
    from conftest import builtin_docstrings

    docs = builtin_docstrings()
    return [docs[0][:400], "short", docs[3][:120], docs[5][:60], "x y", docs[7][:250]]  # several lengths


def test_onnx_outputs_equal_pytorch_encode(exported):
    source, folder = exported
    assert (folder / ONNX_FILE).is_file() and (folder / "tokenizer.json").is_file()
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)
    assert [i.shape for i in session.get_inputs()] == [["batch", "length"]] * 2  # dynamic batch and length
    texts = _texts()
    want = M3Embedder(str(source), use_fp16=False, devices="cpu").encode(
        texts, max_length=96, return_sparse=True, return_colbert_vecs=True
    )
    onnx = OnnxM3Embedder(folder)
    for batch_size in (4, 1):  # padded batches of mixed lengths, and unpadded single texts
        got = onnx.encode(
            texts, batch_size=batch_size, max_length=96, return_sparse=True, return_colbert_vecs=True
        )
        np.testing.assert_allclose(got["dense_vecs"], want["dense_vecs"], atol=1e-5, rtol=0)
        assert sum(len(w) for w in want["lexical_weights"]) > 10  # the comparison is not vacuous
        for i in range(len(texts)):
            assert_lexical_close(got["lexical_weights"][i], dict(want["lexical_weights"][i]), atol=1e-5)
            assert got["colbert_vecs"][i].shape == want["colbert_vecs"][i].shape
            np.testing.assert_allclose(got["colbert_vecs"][i], want["colbert_vecs"][i], atol=1e-5, rtol=0)
    single = onnx.encode(texts[1], return_sparse=True)
    np.testing.assert_allclose(single["dense_vecs"], want["dense_vecs"][1], atol=1e-5, rtol=0)
    assert single["colbert_vecs"] is None


def test_padding_does_not_change_a_text_s_outputs(exported):
    _, folder = exported
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    tok = OnnxM3Embedder(folder).tokenizer
    alone = tok(["short text"], return_tensors="np")
    padded = tok(
        ["short text", _texts()[0]], padding=True, truncation=True, max_length=80, return_tensors="np"
    )
    n = alone["input_ids"].shape[1]
    a = session.run(None, {k: alone[k].astype(np.int64) for k in ("input_ids", "attention_mask")})
    b = session.run(None, {k: padded[k].astype(np.int64) for k in ("input_ids", "attention_mask")})
    np.testing.assert_allclose(b[0][0], a[0][0], atol=1e-5, rtol=0)  # dense
    np.testing.assert_allclose(b[1][0, :n], a[1][0], atol=1e-5, rtol=0)  # sparse weights
    assert (b[1][0, n:] == 0).all() and not b[4][0, n - 1 :].any()  # padding: weight 0, masked
    np.testing.assert_allclose(b[3][0, : n - 1], a[3][0], atol=1e-5, rtol=0)  # ColBERT


def test_onnx_errors(exported, tiny_model, tmp_path):
    source, folder = exported
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / ONNX_FILE).write_bytes((folder / ONNX_FILE).read_bytes()[:500])
    with pytest.raises(ValueError, match="not a readable ONNX graph"):
        OnnxM3Embedder(corrupt / ONNX_FILE)
    with pytest.raises(FileNotFoundError, match="no ONNX graph"):
        OnnxM3Embedder(tmp_path / "nothing")
    with pytest.raises(ValueError, match="fp16=true and adapter_only=true do not apply"):
        export(source, tmp_path / "x", format="onnx", fp16=True)
    with pytest.raises(ValueError, match=r"format='tflite'"):
        export(source, tmp_path / "x", format="tflite")
    tiny_model.save_pretrained(tmp_path / "headless")
    os.remove(tmp_path / "headless" / "colbert_linear.pt")
    with pytest.raises(ValueError, match="model=.*headless: no trained sparse/ColBERT heads") as error:
        export(tmp_path / "headless", tmp_path / "y", format="onnx")
    assert "sparse_linear.pt/colbert_linear.pt" in str(error.value)
    assert "ONNX export needs all three outputs" in str(error.value)
    assert not (tmp_path / "y").exists()  # refused before anything is written
    with pytest.raises(ValueError, match="onnx_int8=true quantises the ONNX graph: it needs format=onnx"):
        export(source, tmp_path / "z", onnx_int8=True)
    with pytest.raises(FileNotFoundError, match=r"model.int8.onnx: no ONNX graph .*onnx_int8=true"):
        OnnxM3Embedder(source, int8=True)  # a flag folder: no graph at all


#: Documented quality bound of the int8 export (module docstring of m3lit.model.onnx_export): every text's dense
#: vector has cosine >= 0.99 to the fp32 graph's; on multilingual-e5-small see benchmarks/onnx_encode.py.
INT8_MIN_DENSE_COSINE = 0.99


def test_int8_export_has_the_same_outputs_close_to_fp32(exported):
    _, folder = exported
    assert (folder / INT8_FILE).is_file()
    import onnx
    from onnx import numpy_helper

    graphs = [onnx.load(str(folder / name)).graph for name in (ONNX_FILE, INT8_FILE)]
    weights = [sum(numpy_helper.to_array(t).nbytes for t in g.initializer) for g in graphs]
    assert weights[1] < 0.3 * weights[0]  # int8 weights (+ scales), embedding table included
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {node.op_type for node in graphs[1].node}
    texts = _texts()
    kw = {"batch_size": 4, "max_length": 96, "return_sparse": True, "return_colbert_vecs": True}
    fp32 = OnnxM3Embedder(folder).encode(texts, **kw)
    int8 = OnnxM3Embedder(folder, int8=True).encode(texts, **kw)
    assert int8.keys() == fp32.keys()
    assert int8["dense_vecs"].shape == fp32["dense_vecs"].shape and int8["dense_vecs"].dtype == np.float32
    a, b = int8["dense_vecs"], fp32["dense_vecs"]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= INT8_MIN_DENSE_COSINE, cosine
    assert not np.array_equal(a, b)  # quantisation changed something: the bound is not vacuous
    for i in range(len(texts)):
        assert int8["colbert_vecs"][i].shape == fp32["colbert_vecs"][i].shape
        x, y = int8["colbert_vecs"][i], fp32["colbert_vecs"][i]
        assert ((x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)).min() >= 0.95
        assert int8["lexical_weights"][i] and all(int(k) > 0 for k in int8["lexical_weights"][i])
