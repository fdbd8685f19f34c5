"""M3Embedder: FlagEmbedding's BGEM3FlagModel API, checked against direct computations."""

from __future__ import annotations

import inspect
import logging
import os
import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from m3_reference import assert_lexical_close, hidden_states, lexical_score, maxsim, naive_encode

from m3lit import BGEM3FlagModel, M3Embedder
from m3lit.inference.embedder import target_devices
from m3lit.inference.scoring import SCORE_KEYS


@pytest.fixture
def saved(tiny_model, tmp_path):
    folder = tmp_path / "model"
    tiny_model.eval().save_pretrained(folder)
    return folder


@pytest.fixture
def embedder(saved):
    return M3Embedder(str(saved), use_fp16=False, devices="cpu", passage_max_length=96, query_max_length=96)


def test_signature_matches_flagembedding_1_4_2():
    """Parameter names, order and defaults of FlagEmbedding 1.4.2's M3Embedder (read from its source)."""
    expected = [
        ("model_name_or_path", inspect.Parameter.empty),
        ("normalize_embeddings", True),
        ("use_fp16", True),
        ("use_bf16", False),
        ("query_instruction_for_retrieval", None),
        ("query_instruction_format", "{}{}"),
        ("devices", None),
        ("pooling_method", "cls"),
        ("trust_remote_code", False),
        ("cache_dir", None),
        ("colbert_dim", -1),
        ("batch_size", 256),
        ("query_max_length", 512),
        ("passage_max_length", 512),
        ("return_dense", True),
        ("return_sparse", False),
        ("return_colbert_vecs", False),
        ("truncate_dim", None),
    ]
    params = list(inspect.signature(M3Embedder.__init__).parameters.values())[1:]
    assert [(p.name, p.default) for p in params[: len(expected)]] == expected
    assert params[-1].kind is inspect.Parameter.VAR_KEYWORD
    for method in ("encode", "encode_queries", "encode_corpus"):
        names = list(inspect.signature(getattr(M3Embedder, method)).parameters)[2:]
        assert names == [
            "batch_size",
            "max_length",
            "return_dense",
            "return_sparse",
            "return_colbert_vecs",
            "kwargs",
        ]
    names = list(inspect.signature(M3Embedder.compute_score).parameters)[1:]
    assert names == [
        "sentence_pairs",
        "batch_size",
        "max_query_length",
        "max_passage_length",
        "weights_for_different_modes",
        "kwargs",
    ]
    assert BGEM3FlagModel is M3Embedder
    assert target_devices("cpu") == ["cpu"] and target_devices(1) == ["cuda:1"]
    assert target_devices([0, 2]) == ["cuda:0", "cuda:2"] and target_devices(["cpu", "cpu"]) == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="devices should be"):
        target_devices(1.5)


def test_encode_matches_direct_computation(embedder, tiny_model, texts):
    out = embedder.encode(
        texts, batch_size=4, return_dense=True, return_sparse=True, return_colbert_vecs=True
    )
    assert set(out) == {"dense_vecs", "lexical_weights", "colbert_vecs"}
    assert isinstance(out["dense_vecs"], np.ndarray) and out["dense_vecs"].shape == (len(texts), 32)
    for i, text in enumerate(texts):
        dense, lexical, colbert, _ = naive_encode(tiny_model, text, max_length=96)
        np.testing.assert_allclose(out["dense_vecs"][i], dense, atol=1e-5)
        assert isinstance(out["lexical_weights"][i], defaultdict)
        assert all(isinstance(k, str) for k in out["lexical_weights"][i])
        assert_lexical_close(out["lexical_weights"][i], lexical)
        np.testing.assert_allclose(out["colbert_vecs"][i], colbert, atol=1e-5)
    # defaults: dense only
    default = embedder.encode(texts[:3])
    assert default["lexical_weights"] is None and default["colbert_vecs"] is None
    np.testing.assert_allclose(default["dense_vecs"], out["dense_vecs"][:3], atol=1e-6)


def test_single_string_is_unbatched(embedder, tiny_model, texts):
    out = embedder.encode(texts[0], return_sparse=True, return_colbert_vecs=True)
    dense, lexical, colbert, _ = naive_encode(tiny_model, texts[0], max_length=96)
    assert out["dense_vecs"].shape == (32,)
    np.testing.assert_allclose(out["dense_vecs"], dense, atol=1e-5)
    assert isinstance(out["lexical_weights"], dict)
    assert_lexical_close(out["lexical_weights"], lexical)
    np.testing.assert_allclose(out["colbert_vecs"], colbert, atol=1e-5)


def test_queries_instruction_and_lengths(saved, tiny_model):
    emb = M3Embedder(
        str(saved),
        use_fp16=False,
        devices="cpu",
        query_instruction_for_retrieval="query: ",
        query_max_length=8,
        passage_max_length=20,
        passage_instruction_for_retrieval="passage: ",
    )
    text = "return the absolute value of the argument " * 3
    q = emb.encode_queries([text])["dense_vecs"][0]
    np.testing.assert_allclose(q, naive_encode(tiny_model, "query: " + text, max_length=8)[0], atol=1e-5)
    c = emb.encode_corpus([text])["dense_vecs"][0]
    np.testing.assert_allclose(c, naive_encode(tiny_model, "passage: " + text, max_length=20)[0], atol=1e-5)
    plain = emb.encode([text])["dense_vecs"][0]  # encode: passage length, no instruction
    np.testing.assert_allclose(plain, naive_encode(tiny_model, text, max_length=20)[0], atol=1e-5)
    with pytest.raises(TypeError, match="unexpected keyword"):
        emb.encode([text], max_lenght=3)


def test_compute_score_keys_and_formulas(embedder, tiny_model, texts):
    pairs = [(" ".join(texts[i].split()[:4]), texts[(i + 3) % len(texts)]) for i in range(7)]
    weights = [0.4, 0.2, 0.4]
    got = embedder.compute_score(pairs, batch_size=3, weights_for_different_modes=weights)
    assert list(got) == list(SCORE_KEYS)
    _assert_scores_close(got, _reference_scores(tiny_model, pairs, 3, 96, weights))
    one = embedder.compute_score(pairs[0])  # one pair -> floats, default weights [1, 1, 1]
    assert set(one) == set(SCORE_KEYS) and all(isinstance(v, float) for v in one.values())
    d, s, c = one["dense"], one["sparse"], one["colbert"]
    assert one["colbert+sparse+dense"] == pytest.approx((d + s + c) / 3, abs=1e-6)
    assert one["sparse+dense"] == pytest.approx((d + s) / 2, abs=1e-6)
    assert embedder.compute_score([]) == []
    with pytest.raises(ValueError, match="3 values"):
        embedder.compute_score(pairs, weights_for_different_modes=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"sentence_pairs\[1\]"):
        embedder.compute_score([("a", "b"), ("a",)])


def _reference_scores(model, pairs, batch_size: int, max_length: int, weights) -> dict[str, list[float]]:
    """FlagEmbedding's compute_score written out: pairs in input order in batches of ``batch_size``; a
    passage shorter than its batch's longest has padded zero ColBERT vectors, which join the max."""
    w_d, w_s, w_c = weights
    want: dict[str, list[float]] = {key: [] for key in SCORE_KEYS}
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        encoded = [(naive_encode(model, q, max_length), naive_encode(model, p, max_length)) for q, p in batch]
        longest = max(len(p[3]) for _, p in encoded)
        for q, p in encoded:
            d, s = float(q[0] @ p[0]), lexical_score(q[1], p[1])
            c = maxsim(q[2], p[2], clip_at_zero=len(p[3]) < longest)
            for key, value in zip(
                SCORE_KEYS,
                (
                    c,
                    s,
                    d,
                    (w_s * s + w_d * d) / (w_s + w_d),
                    (w_d * d + w_s * s + w_c * c) / (w_d + w_s + w_c),
                ),
                strict=True,
            ):
                want[key].append(value)
    return want


def _assert_scores_close(got: dict, want: dict, atol: float = 1e-5) -> None:
    assert list(got) == list(want)
    for key in SCORE_KEYS:
        np.testing.assert_allclose(got[key], want[key], atol=atol, rtol=0, err_msg=key)


def test_compute_score_encodes_distinct_texts_once_with_reference_batches(tiny_model, texts, tmp_path):
    """Repeated queries, a text used as query and passage, short passages whose best ColBERT matches are
    negative (clipped at 0 by the reference's padding), batches of 2 and windows of 4 batches crossed."""
    with torch.no_grad():  # ColBERT head on centred hidden states: directions spread, some best matches < 0
        mean = torch.cat([hidden_states(tiny_model, tiny_model.tokenizer(t)["input_ids"]) for t in texts])
        head = tiny_model.colbert_head.linear
        head.bias.copy_(-(head.weight @ mean.mean(0)))
    tiny_model.eval().save_pretrained(tmp_path / "model")
    embedder = M3Embedder(str(tmp_path / "model"), use_fp16=False, devices="cpu", passage_max_length=96)
    embedder.query_max_length = 96
    queries = [" ".join(texts[i].split()[:5]) for i in range(3)]
    passages = [*texts[:6], "x", "ok", "a b", "value"]
    pairs = [(queries[i % 3], passages[(3 * i) % 10]) for i in range(17)] + [(texts[4], texts[4])]
    weights = [0.5, 0.3, 0.2]
    want = _reference_scores(tiny_model, pairs, 2, 96, weights)
    unclipped = _reference_scores(tiny_model, pairs, 1, 96, weights)  # batches of 1: nothing padded
    assert np.abs(np.subtract(want["colbert"], unclipped["colbert"])).max() > 1e-3  # the clipping matters
    _assert_scores_close(
        embedder.compute_score(pairs, batch_size=2, weights_for_different_modes=weights), want
    )
    _assert_scores_close(
        embedder.compute_score(pairs, batch_size=1, weights_for_different_modes=weights), unclipped
    )
    one = embedder.compute_score(pairs[3], batch_size=2, weights_for_different_modes=weights)
    _assert_scores_close(
        {key: [value] for key, value in one.items()}, {k: v[3:4] for k, v in unclipped.items()}
    )
    assert embedder.compute_score([], batch_size=2) == []


def test_lexical_colbert_and_token_helpers(embedder, tiny_model, texts):
    out = embedder.encode(texts[:4], return_sparse=True, return_colbert_vecs=True)
    lw = out["lexical_weights"]
    assert embedder.compute_lexical_matching_score(lw[0], lw[1]) == pytest.approx(
        lexical_score(lw[0], lw[1]), rel=1e-6
    )
    matrix = embedder.compute_lexical_matching_score(lw[:2], lw)
    assert matrix.shape == (2, 4)
    np.testing.assert_allclose(matrix, [[lexical_score(a, b) for b in lw] for a in lw[:2]], rtol=1e-6)
    np.testing.assert_allclose(
        np.diag(matrix[:, :2]), [sum(w * w for w in d.values()) for d in lw[:2]], rtol=1e-5
    )
    with pytest.raises(ValueError, match="not correct"):
        embedder.compute_lexical_matching_score(lw[0], lw)
    q, p = out["colbert_vecs"][0][:3], out["colbert_vecs"][1]
    score = embedder.colbert_score(q, p)
    assert isinstance(score, torch.Tensor) and score.dim() == 0
    assert float(score) == pytest.approx(maxsim(q, p), abs=1e-6)
    tokens = embedder.convert_id_to_token(lw[0])
    assert tokens == {tiny_model.tokenizer.decode([int(k)]): v for k, v in lw[0].items()}
    assert len(embedder.convert_id_to_token(lw[:2])) == 2


def test_truncate_dim_and_no_normalisation(saved, tiny_model, texts):
    emb = M3Embedder(str(saved), use_fp16=False, devices="cpu", truncate_dim=8, passage_max_length=96)
    out = emb.encode(texts[:3], return_colbert_vecs=True)
    for i, text in enumerate(texts[:3]):
        ids = tiny_model.tokenizer(text, truncation=True, max_length=96)["input_ids"]
        with torch.no_grad():
            h = tiny_model.encoder(input_ids=torch.tensor([ids])).last_hidden_state[0]
            raw_colbert = tiny_model.colbert_head.linear(h[1:])[:, :8]
        want = torch.nn.functional.normalize(h[0, :8], dim=-1).numpy()  # truncate, then normalise
        np.testing.assert_allclose(out["dense_vecs"][i], want, atol=1e-5)
        np.testing.assert_allclose(
            out["colbert_vecs"][i], torch.nn.functional.normalize(raw_colbert, dim=-1), atol=1e-5
        )
    raw = M3Embedder(
        str(saved), use_fp16=False, devices="cpu", normalize_embeddings=False, passage_max_length=96
    )
    ids = tiny_model.tokenizer(texts[0], truncation=True, max_length=96)["input_ids"]
    with torch.no_grad():
        cls = tiny_model.encoder(input_ids=torch.tensor([ids])).last_hidden_state[0, 0].numpy()
    np.testing.assert_allclose(raw.encode(texts[0])["dense_vecs"], cls, atol=1e-5)


def test_several_devices_match_one(saved, texts):
    one = M3Embedder(str(saved), use_fp16=False, devices="cpu").encode(texts, return_sparse=True)
    two = M3Embedder(str(saved), use_fp16=False, devices=["cpu", "cpu"]).encode(texts, return_sparse=True)
    np.testing.assert_allclose(two["dense_vecs"], one["dense_vecs"], atol=1e-6)
    for a, b in zip(two["lexical_weights"], one["lexical_weights"], strict=True):
        assert_lexical_close(a, {k: float(v) for k, v in b.items()}, atol=1e-6)


def test_released_layout_fp16_files(tiny_model, tmp_path, texts):
    """BAAI/bge-m3 ships fp16 head files; simulate with fp16 encoder + heads; CPU inference runs fp32."""
    folder = tmp_path / "fp16"
    tiny_model.save_pretrained(folder, fp16=True)
    for name in ("sparse_linear.pt", "colbert_linear.pt"):
        state = torch.load(folder / name, weights_only=True)
        assert all(t.dtype == torch.float16 for t in state.values())
    emb = M3Embedder(str(folder), use_fp16=True, devices="cpu", passage_max_length=96)
    assert all(p.dtype == torch.float32 for p in emb.model.parameters())
    rounded = tiny_model.half().float().eval()  # the values the fp16 files hold
    out = emb.encode(texts[:4], return_sparse=True, return_colbert_vecs=True)
    for i, text in enumerate(texts[:4]):
        dense, lexical, colbert, _ = naive_encode(rounded, text, 96)
        np.testing.assert_allclose(out["dense_vecs"][i], dense, atol=1e-5)
        assert_lexical_close(out["lexical_weights"][i], lexical)
        np.testing.assert_allclose(out["colbert_vecs"][i], colbert, atol=1e-5)


def test_headless_folder_warns_and_works_dense_only(tiny_model, tmp_path, texts, caplog):
    folder = tmp_path / "plain"
    tiny_model.save_pretrained(folder)
    os.remove(folder / "sparse_linear.pt")
    os.remove(folder / "colbert_linear.pt")
    with caplog.at_level(logging.WARNING):
        emb = M3Embedder(str(folder), use_fp16=False, devices="cpu", passage_max_length=96)
    assert "NEWLY INITIALISED" in caplog.text
    dense = emb.encode(texts[:2])["dense_vecs"]
    np.testing.assert_allclose(dense[1], naive_encode(tiny_model, texts[1], 96)[0], atol=1e-5)
    with pytest.raises(ValueError, match="no trained sparse/ColBERT heads"):
        emb.encode(texts[:2], return_sparse=True)
    with pytest.raises(ValueError, match="no trained sparse/ColBERT heads"):
        emb.encode(texts[:2], return_colbert_vecs=True)
    with pytest.raises(ValueError, match="no trained sparse/ColBERT heads"):
        emb.compute_score([("a", "b")])


class _Payload:
    """Unpickling this creates a marker directory: proof that arbitrary code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_malicious_head_file_is_refused(saved, tmp_path):
    marker = tmp_path / "payload_ran"
    state = torch.load(saved / "colbert_linear.pt", weights_only=True)
    torch.save({**state, "bias": state["bias"], "extra": _Payload(marker)}, saved / "colbert_linear.pt")
    with pytest.raises(pickle.UnpicklingError):
        M3Embedder(str(saved), use_fp16=False, devices="cpu")
    assert not marker.exists()
    # the payload is real: an unsafe load WOULD run it
    torch.load(saved / "colbert_linear.pt", weights_only=False)
    assert marker.exists()


def test_pooling_method_other_than_cls_is_rejected(saved):
    with pytest.raises(ValueError, match="'cls' pooling only"):
        M3Embedder(str(saved), use_fp16=False, devices="cpu", pooling_method="mean")


def test_fp16_padded_colbert_rows_are_zero_not_nan(tiny_model, texts):
    """F.normalize's eps underflows in fp16; padded ColBERT rows must stay exact zeros (found on an H100)."""
    half = tiny_model.eval().half()
    batch = tiny_model.tokenizer(texts[:4], padding=True, truncation=True, max_length=40, return_tensors="pt")
    with torch.no_grad():
        out = half(batch["input_ids"], batch["attention_mask"])
    assert out.colbert.dtype == torch.float16 and not torch.isnan(out.colbert).any()
    padded = ~out.colbert_mask
    assert padded.any() and (out.colbert[padded] == 0).all()
    norms = out.colbert[out.colbert_mask].float().norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=2e-3, rtol=0)
