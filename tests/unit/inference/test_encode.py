"""encode_texts (the shared inference loop) and the ``python -m m3lit.encode`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from m3_reference import assert_lexical_close, naive_encode

from m3lit.encode import encode_file, main
from m3lit.inference.encoding import (
    encode_texts,
    encoder_mask,
    forward_batches,
    pad_batch,
    sparse_to_dict,
    tokenize_texts,
)


def test_encode_texts_matches_direct_computation(tiny_model, texts):
    tiny_model.eval()
    texts = [*texts[:7], "short", "x"]
    out = encode_texts(tiny_model, texts, batch_size=3, max_length=40, dense=True, sparse=True, colbert=True)
    assert out.dense.shape == (len(texts), 32) and out.dense.dtype == np.float32
    assert len(out.sparse) == len(out.colbert) == len(texts)
    for i, text in enumerate(texts):
        dense, lexical, colbert, _ = naive_encode(tiny_model, text, max_length=40)
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
    texts = [(text + " ") * 10 for text in texts]  # all truncated to 32 tokens: no padding-based cuts
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
    assert calls[:5] == [12, 9, 6, 4, 4]  # 12 -> 9 -> 6 -> 4 (padding under 5%), then the rest
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


# ------------------------------------------------------------------------------------- command line
@pytest.fixture
def saved_model(tiny_model, tmp_path):
    tiny_model.eval().save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_encode_command_jsonl(saved_model, tiny_model, texts, tmp_path, capsys):
    rows = [{"_id": f"d{i}", "title": "Title" if i % 2 else "", "text": t} for i, t in enumerate(texts[:7])]
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "emb"
    argv = [f"model={saved_model}", f"input={source}", f"output_dir={out}", "colbert=true", "chunk_size=3"]
    assert main([*argv, "batch_size=2", "max_length=64"]) == 0
    assert "encoded 7 passages" in capsys.readouterr().out
    want_texts = [("Title " if i % 2 else "") + t for i, t in enumerate(texts[:7])]
    want = encode_texts(tiny_model, want_texts, max_length=64, sparse=True, colbert=True)
    assert (out / "ids.txt").read_text().split() == [f"d{i}" for i in range(7)]
    np.testing.assert_allclose(np.load(out / "dense.npy"), want.dense, atol=1e-6)
    records = [json.loads(line) for line in (out / "sparse.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"d{i}" for i in range(7)]
    for record, (ids, weights) in zip(records, want.sparse, strict=True):
        assert list(record["weights"]) == [str(i) for i in ids]
        np.testing.assert_allclose(list(record["weights"].values()), weights, atol=1e-6)
    vecs, offsets = np.load(out / "colbert.npy"), np.load(out / "colbert_offsets.npy")
    assert offsets[0] == 0 and offsets[-1] == len(vecs) and len(offsets) == 8
    for i, rows_i in enumerate(want.colbert):
        np.testing.assert_allclose(vecs[offsets[i] : offsets[i + 1]], rows_i, atol=1e-6)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["count"] == 7 and meta["skipped"] == 0 and meta["colbert_dim"] == 16


def test_encode_command_text_file_and_invalid_lines(saved_model, tiny_model, texts, tmp_path, command_error):
    source = tmp_path / "passages.txt"
    source.write_text("\n".join([texts[0], texts[1], "", texts[2]]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"passages.txt:line 3: empty passage"):
        encode_file(model=str(saved_model), input=str(source), output_dir=str(tmp_path / "a"), progress=False)
    meta = encode_file(
        model=str(saved_model),
        input=str(source),
        output_dir=str(tmp_path / "b"),
        skip_invalid=True,
        sparse=False,
        colbert=True,
        colbert_fp16=True,
        progress=False,
    )
    assert meta["count"] == 3 and meta["skipped"] == 1
    assert (tmp_path / "b" / "ids.txt").read_text().split() == ["0", "1", "3"]  # line numbers, 0-based
    assert not (tmp_path / "b" / "sparse.jsonl").exists()
    assert np.load(tmp_path / "b" / "colbert.npy").dtype == np.float16
    want = encode_texts(tiny_model, [texts[0], texts[1], texts[2]], max_length=512).dense
    np.testing.assert_allclose(np.load(tmp_path / "b" / "dense.npy"), want, atol=1e-6)

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "body": "wrong field"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:line 2: field 'text': missing"):
        encode_file(model=str(saved_model), input=str(bad), output_dir=str(tmp_path / "c"), progress=False)
    meta = encode_file(
        model=str(saved_model),
        input=str(bad),
        output_dir=str(tmp_path / "d"),
        skip_invalid=True,
        progress=False,
    )
    assert meta["count"] == 1 and meta["skipped"] == 2
    for argv, needle in [
        ([f"model={saved_model}", f"output_dir={tmp_path}"], "input=... is required"),
        ([f"model={saved_model}", f"input={bad}", f"output_dir={tmp_path}", "batch_size=big"], "batch_size must be an integer"),
    ]:  # fmt: skip
        status, line = command_error(main, argv)
        assert status == 2 and line.startswith("error: encode: ") and needle in line, line


def test_encoder_mask_gives_the_hidden_states_of_the_padding_mask(tiny_model, texts):
    tiny_model.eval()
    ids = tokenize_texts(tiny_model.tokenizer, texts[:5], 40)
    input_ids, attention_mask = pad_batch(ids, tiny_model.tokenizer.pad_token_id)
    mask = encoder_mask(tiny_model, attention_mask)
    assert mask.shape == (5, 1, 1, input_ids.shape[1]) and mask.dtype == torch.bool
    with torch.no_grad():
        want = tiny_model.encode_hidden(input_ids, attention_mask)
        got = tiny_model.encode_hidden(input_ids, mask)
    real = attention_mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-6, rtol=0)
    assert encoder_mask(tiny_model, torch.ones(2, 3, dtype=torch.long)) is None  # nothing padded
    tiny_model.encoder.config._attn_implementation = "eager"  # eager adds the mask: keep the (B, L) form
    try:
        assert encoder_mask(tiny_model, attention_mask) is attention_mask
    finally:
        tiny_model.encoder.config._attn_implementation = "sdpa"


def test_forward_batches_max_padding(tiny_model, texts):
    ids = sorted(tokenize_texts(tiny_model.tokenizer, texts, 60), key=len, reverse=True)
    items = [(row, None) for row in ids]
    cpu = torch.device("cpu")
    assert [len(c) for c, _, _ in forward_batches(tiny_model, items, 5, cpu)] == [5, 5, 2]
    chunks = []
    for chunk, out, used in forward_batches(tiny_model, items, 12, cpu, sparse=False, max_padding=0.0):
        start, n = sum(chunks), len(chunk)
        assert used == 12 and out.dense.shape[0] == n and out.colbert.shape[1] == len(ids[start]) - 1
        # at least min(batch_size, 8) rows; beyond that, no padding at all (max_padding=0)
        assert n <= 8 or n * len(ids[start]) <= sum(len(row) for row in ids[start : start + n])
        chunks.append(n)
    assert chunks == [8, 4]
