"""Multiple-CLS (MCLS, BGE-M3 App. B.2) long-document encoding against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch.nn.functional as F
from m3_reference import assert_lexical_close, colbert_rows, hidden_states, lexical_dict

from m3lit import M3Embedder
from m3lit.inference.encoding import encode_texts
from m3lit.inference.mcls import insert_cls_tokens

CLS, EOS = 0, 2


def naive_insert(ids: list[int], interval: int, max_length: int) -> tuple[list[int], list[int]]:
    """Reference insertion: walk the content tokens, emit a CLS before token k when k > 0 and k % N == 0."""
    content = ids[1:-1]
    while content and 2 + len(content) + math.ceil(len(content) / interval) - 1 > max_length:
        content = content[:-1]
    out, inserted_at = [CLS], []
    for k, token in enumerate(content):
        if k > 0 and k % interval == 0:
            inserted_at.append(len(out))
            out.append(CLS)
        out.append(token)
    return [*out, EOS], inserted_at


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 8, 9, 13])
@pytest.mark.parametrize("max_length", [2, 7, 12, 100])
def test_insert_cls_tokens_positions_and_budget(n, max_length):
    ids = [CLS, *range(10, 10 + n), EOS]
    out, flags = insert_cls_tokens(ids, interval=4, cls_id=CLS, eos_id=EOS, max_length=max_length)
    want, inserted_at = naive_insert(ids, 4, max_length)
    assert out == want
    assert [i for i, f in enumerate(flags) if f] == inserted_at
    assert len(out) <= max_length
    assert out[-2] != CLS or len(out) == 2  # never a CLS right before EOS
    kept = len(out) - 2 - len(inserted_at)
    if kept < n:  # truncated: one more content token would not fit
        assert 2 + (kept + 1) + math.ceil((kept + 1) / 4) - 1 > max_length


def test_insert_cls_tokens_rejects_bad_input():
    with pytest.raises(ValueError, match="interval must be positive"):
        insert_cls_tokens([CLS, 5, EOS], interval=0, cls_id=CLS, eos_id=EOS, max_length=10)
    with pytest.raises(ValueError, match="tokenised as"):
        insert_cls_tokens([5, 6, EOS], interval=2, cls_id=CLS, eos_id=EOS, max_length=10)
    with pytest.raises(ValueError, match="at least 2"):
        insert_cls_tokens([CLS, EOS], interval=2, cls_id=CLS, eos_id=EOS, max_length=1)


def naive_mcls(model, text: str, interval: int, max_length: int):
    tok = model.tokenizer
    ids = tok(text, truncation=True, max_length=max_length)["input_ids"]
    seq, inserted_at = naive_insert(ids, interval, max_length)
    hidden = hidden_states(model, seq)
    cls_positions = [0, *inserted_at]
    dense = F.normalize(hidden[cls_positions].mean(0), dim=-1).numpy()
    kept = [i for i in range(1, len(seq)) if i not in inserted_at]
    return (
        dense,
        lexical_dict(model, hidden, seq, skip=set(inserted_at)),
        colbert_rows(model, hidden[kept]),
        seq,
    )


def test_mcls_long_input_matches_direct_computation(tiny_model, texts):
    long_text = " ".join(texts)  # several hundred tokens, truncated to the tiny model's 128 positions
    batch = [long_text, texts[0], " ".join(texts[3:6]), "x"]
    out = encode_texts(
        tiny_model, batch, batch_size=3, max_length=128, sparse=True, colbert=True, mcls_interval=32
    )
    for i, text in enumerate(batch):
        dense, lexical, colbert, seq = naive_mcls(tiny_model, text, 32, 128)
        np.testing.assert_allclose(out.dense[i], dense, atol=1e-5)
        got = dict(zip(map(str, out.sparse[i][0]), out.sparse[i][1].tolist(), strict=True))
        assert_lexical_close(got, lexical)
        np.testing.assert_allclose(out.colbert[i], colbert, atol=1e-5)
    seq = naive_mcls(tiny_model, long_text, 32, 128)[3]
    assert len(seq) == 128 and seq.count(CLS) == 4  # 1 leading + 3 inserted: 123 content tokens, 32 per chunk
    # the long text's dense vector really differs from plain CLS pooling
    plain = encode_texts(tiny_model, [long_text], max_length=128).dense[0]
    assert np.abs(plain - out.dense[0]).max() > 1e-3


def test_mcls_equals_plain_encoding_on_short_texts(tiny_model, texts):
    short = [t for t in texts if len(tiny_model.tokenizer(t)["input_ids"]) <= 34][:4]
    assert short
    a = encode_texts(tiny_model, short, max_length=128, sparse=True, colbert=True, mcls_interval=32)
    b = encode_texts(tiny_model, short, max_length=128, sparse=True, colbert=True)
    np.testing.assert_allclose(a.dense, b.dense, atol=1e-6)
    for (ia, wa), (ib, wb), ca, cb in zip(a.sparse, b.sparse, a.colbert, b.colbert, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_allclose(wa, wb, atol=1e-6)
        np.testing.assert_allclose(ca, cb, atol=1e-6)


def test_embedder_mcls_option(tiny_model, tmp_path, texts):
    tiny_model.eval().save_pretrained(tmp_path / "m")
    long_text = " ".join(texts)
    want = naive_mcls(tiny_model, long_text, 16, 128)[0]
    emb = M3Embedder(
        str(tmp_path / "m"), use_fp16=False, devices="cpu", passage_max_length=128, mcls_interval=16
    )
    np.testing.assert_allclose(emb.encode(long_text)["dense_vecs"], want, atol=1e-5)
    plain = M3Embedder(str(tmp_path / "m"), use_fp16=False, devices="cpu", passage_max_length=128)
    np.testing.assert_allclose(plain.encode(long_text, mcls_interval=16)["dense_vecs"], want, atol=1e-5)
    assert np.abs(plain.encode(long_text)["dense_vecs"] - want).max() > 1e-3
