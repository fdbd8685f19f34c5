"""encode_texts (the shared inference loop) and the ``python -m m3lit.encode`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from m3lit.encoding import encode_texts, sparse_to_dict


def naive_outputs(model, text: str, max_length: int = 512):
    """Encode ONE text without padding and apply the BGE-M3 formulas (§3.2) directly."""
    tok = model.tokenizer
    ids = tok(text, truncation=True, max_length=max_length)["input_ids"]
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        hidden = model.encoder(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids)
        ).last_hidden_state[0]
        dense = F.normalize(hidden[0], dim=-1).numpy()
        weights = torch.relu(
            hidden @ model.sparse_head.linear.weight[0] + model.sparse_head.linear.bias[0]
        ).numpy()
        colbert = F.normalize(model.colbert_head.linear(hidden[1:]), dim=-1).numpy()
    dropped = {tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}
    lexical: dict[str, float] = {}
    for w, t in zip(weights, ids, strict=True):
        if t not in dropped and w > 0 and w > lexical.get(str(t), 0):
            lexical[str(t)] = float(w)
    return dense, lexical, colbert


def assert_lexical_close(got: dict, want: dict, atol: float = 1e-5) -> None:
    assert list(got) == list(want)  # same ids, same (first-occurrence) order
    for key in want:
        assert abs(float(got[key]) - want[key]) <= atol, key


def test_encode_texts_matches_direct_computation(tiny_model, texts):
    tiny_model.eval()
    texts = [*texts[:7], "short", "x"]
    out = encode_texts(tiny_model, texts, batch_size=3, max_length=40, dense=True, sparse=True, colbert=True)
    assert out.dense.shape == (len(texts), 32) and out.dense.dtype == np.float32
    assert len(out.sparse) == len(out.colbert) == len(texts)
    for i, text in enumerate(texts):
        dense, lexical, colbert = naive_outputs(tiny_model, text, max_length=40)
        np.testing.assert_allclose(out.dense[i], dense, atol=1e-5)
        ids, weights = out.sparse[i]
        assert ids.dtype == np.int64 and weights.dtype == np.float32 and (weights > 0).all()
        assert len(set(ids.tolist())) == len(ids)
        assert_lexical_close(sparse_to_dict(ids, weights), lexical)
        assert (
            out.colbert[i].shape
            == colbert.shape
            == (len(tiny_model.tokenizer(text, truncation=True, max_length=40)["input_ids"]) - 1, 16)
        )
        np.testing.assert_allclose(out.colbert[i], colbert, atol=1e-5)


def test_encode_texts_order_batch_size_and_training_flag(tiny_model, texts):
    tiny_model.train()
    a = encode_texts(tiny_model, texts, batch_size=1, max_length=32, sparse=True)
    b = encode_texts(tiny_model, texts, batch_size=5, max_length=32, sparse=True)
    assert tiny_model.training  # restored
    np.testing.assert_allclose(a.dense, b.dense, atol=1e-5)
    for (ia, wa), (ib, wb) in zip(a.sparse, b.sparse, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_allclose(wa, wb, atol=1e-5)
    assert a.colbert is None and b.colbert is None
    # dropout off during encoding: the same call twice gives the same vectors
    np.testing.assert_array_equal(b.dense, encode_texts(tiny_model, texts, batch_size=5, max_length=32).dense)


def test_encode_texts_edge_cases(tiny_model):
    empty = encode_texts(tiny_model, [], sparse=True, colbert=True)
    assert empty.dense.shape == (0, 32) and empty.sparse == [] and empty.colbert == []
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        encode_texts(tiny_model, ["ok", 3])
    with pytest.raises(ValueError, match="at least one"):
        encode_texts(tiny_model, ["ok"], dense=False)
    # max_length above the model's 128 positions is capped, not a crash
    long_text = " ".join(["word"] * 400)
    out = encode_texts(tiny_model, [long_text], max_length=8192, colbert=True)
    assert out.colbert[0].shape[0] == 127


def test_out_of_memory_backoff(tiny_model, texts):
    """A simulated allocator failure for batches over 4 rows: batch size shrinks x3/4 until it fits."""
    reference = encode_texts(tiny_model, texts, batch_size=12, max_length=32, sparse=True)
    calls = []

    def fail_on_big_batches(module, args, kwargs):
        rows = kwargs["input_ids"].shape[0]
        calls.append(rows)
        if rows > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = tiny_model.encoder.register_forward_pre_hook(fail_on_big_batches, with_kwargs=True)
    try:
        out = encode_texts(tiny_model, texts, batch_size=12, max_length=32, sparse=True)
    finally:
        handle.remove()
    assert calls[:5] == [12, 9, 6, 4, 4]  # 12 -> 9 -> 6 -> 4, then the rest of the texts
    assert out.batch_size == 4
    np.testing.assert_allclose(out.dense, reference.dense, atol=1e-5)

    def always_fail(module, args, kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    handle = tiny_model.encoder.register_forward_pre_hook(always_fail, with_kwargs=True)
    try:
        with pytest.raises(torch.OutOfMemoryError):
            encode_texts(tiny_model, texts[:2], batch_size=2)
    finally:
        handle.remove()


def test_other_runtime_errors_are_not_swallowed(tiny_model):
    def broken(module, args, kwargs):
        raise RuntimeError("shape mismatch somewhere")

    handle = tiny_model.encoder.register_forward_pre_hook(broken, with_kwargs=True)
    try:
        with pytest.raises(RuntimeError, match="shape mismatch"):
            encode_texts(tiny_model, ["a", "b"], batch_size=2)
    finally:
        handle.remove()


def test_sparse_to_dict_keeps_order():
    d = sparse_to_dict(np.array([9, 4], dtype=np.int64), np.array([0.5, 0.25], dtype=np.float32))
    assert list(d.items()) == [("9", np.float32(0.5)), ("4", np.float32(0.25))]
    assert json.dumps({k: float(v) for k, v in d.items()}) == '{"9": 0.5, "4": 0.25}'
