"""Windowed encoding of long passages (m3lit.inference.windows) against a direct, one-window-at-a-time computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as F
from conftest import builtin_docstrings
from m3_reference import assert_lexical_close, colbert_rows, hidden_states, lexical_dict

from m3lit import M3Embedder
from m3lit.inference.encoding import encode_texts
from m3lit.inference.windows import split_windows
from m3lit.retrieval import RetrievalConfig
from m3lit.retrieval.index.corpus import index_corpus

CLS, EOS = 0, 2


def naive_windowed(model, text: str, window: int, max_length: int):
    """Cut the tokenised text into windows of ``window - 2`` content tokens, encode each alone, merge by hand."""
    ids = model.tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    content = ids[1:-1]
    step = window - 2
    pieces = (
        [ids]
        if len(ids) <= window
        else [[CLS, *content[i : i + step], EOS] for i in range(0, len(content), step)]
    )
    dense_sum, lexical, rows = 0.0, {}, []
    for k, piece in enumerate(pieces):
        hidden = hidden_states(model, piece)
        dense_sum = dense_sum + F.normalize(hidden[0], dim=-1)
        for token, weight in lexical_dict(model, hidden, piece).items():
            lexical[token] = max(weight, lexical.get(token, 0.0))
        vectors = colbert_rows(model, hidden[1:])
        rows.append(vectors if k == len(pieces) - 1 else vectors[:-1])  # one </s>, at the end
    dense = F.normalize(dense_sum / len(pieces), dim=-1).numpy()
    return dense, lexical, np.concatenate(rows), len(pieces)


def test_split_windows_cuts_content_and_keeps_short_texts():
    rows = [[CLS, *range(10, 17), EOS], [CLS, 5, EOS], [CLS, 7, 8, EOS]]
    windows, owners = split_windows(rows, window=4, cls_id=CLS, eos_id=EOS)
    assert windows == [
        [CLS, 10, 11, EOS],
        [CLS, 12, 13, EOS],
        [CLS, 14, 15, EOS],
        [CLS, 16, EOS],
        [CLS, 5, EOS],
        [CLS, 7, 8, EOS],  # exactly ``window`` tokens: one window, unchanged
    ]
    assert owners.tolist() == [0, 0, 0, 0, 1, 2]
    with pytest.raises(ValueError, match=">= 3"):
        split_windows(rows, window=2, cls_id=CLS, eos_id=EOS)
    with pytest.raises(ValueError, match="tokenised as"):
        split_windows([[5, 6, 7, 8, 9, EOS]], window=4, cls_id=CLS, eos_id=EOS)


def test_windowed_encoding_matches_direct_computation(tiny_model, texts):
    long_text = " ".join(texts)  # several hundred tokens: five windows of 32 under the 128-token cap
    batch = [texts[0], long_text, " ".join(texts[3:6]), "x"]
    out = encode_texts(tiny_model, batch, batch_size=3, max_length=128, sparse=True, colbert=True, window=32)
    counts = []
    for i, text in enumerate(batch):
        dense, lexical, colbert, n_windows = naive_windowed(tiny_model, text, 32, 128)
        counts.append(n_windows)
        np.testing.assert_allclose(out.dense[i], dense, atol=1e-5)
        got = dict(zip(map(str, out.sparse[i][0]), out.sparse[i][1].tolist(), strict=True))
        assert_lexical_close(got, lexical)
        np.testing.assert_allclose(out.colbert[i], colbert, atol=1e-5)
    assert counts[1] == 5 and counts[3] == 1  # 126 content tokens in windows of 30; "x" is one window
    # a text yields as many ColBERT rows as in one pass (content tokens + </s>)
    plain = encode_texts(tiny_model, batch, max_length=128, sparse=True, colbert=True)
    assert [len(c) for c in out.colbert] == [len(c) for c in plain.colbert]
    assert np.abs(plain.colbert[1] - out.colbert[1]).max() > 1e-3  # the windows really changed the long text
    np.testing.assert_allclose(plain.dense[3], out.dense[3], atol=1e-6)  # and left the short one alone
    with pytest.raises(ValueError, match="not both"):
        encode_texts(tiny_model, batch, max_length=128, window=32, mcls_interval=16)


def test_passage_window_reaches_the_corpus_index_and_is_validated(tiny_model, texts):
    long_texts = [" ".join(texts[i : i + 4]) for i in range(0, 12, 4)]
    cfg = RetrievalConfig(batch_size=2, passage_max_len=128, passage_window=40)
    index = index_corpus(tiny_model, long_texts, {"dense", "mcls"}, cfg, vocab=len(tiny_model.tokenizer))
    for row, text in enumerate(long_texts):
        np.testing.assert_allclose(
            index.dense.vectors[row], naive_windowed(tiny_model, text, 40, 128)[0], atol=1e-5
        )
    # Dense+MCLS stays one pass (the paper's App. B.2 method), whatever the window
    mcls = encode_texts(tiny_model, long_texts, max_length=128, mcls_interval=cfg.mcls_interval)
    np.testing.assert_allclose(index.mcls.vectors, mcls.dense, atol=1e-6)
    with pytest.raises(ValueError, match="passage_window must be >= 3"):
        RetrievalConfig(passage_window=2)


def test_embedder_window_option(tiny_model, tmp_path, texts):
    tiny_model.eval().save_pretrained(tmp_path / "m")
    long_text = " ".join(texts)
    dense, lexical, colbert, _ = naive_windowed(tiny_model, long_text, 32, 128)
    emb = M3Embedder(str(tmp_path / "m"), use_fp16=False, devices="cpu", passage_max_length=128, window=32)
    out = emb.encode(long_text, return_sparse=True, return_colbert_vecs=True)
    np.testing.assert_allclose(out["dense_vecs"], dense, atol=1e-5)
    assert_lexical_close(dict(out["lexical_weights"]), lexical)
    np.testing.assert_allclose(out["colbert_vecs"], colbert, atol=1e-5)
    plain = M3Embedder(str(tmp_path / "m"), use_fp16=False, devices="cpu", passage_max_length=128)
    np.testing.assert_allclose(plain.encode(long_text, window=32)["dense_vecs"], dense, atol=1e-5)


def test_encode_command_window_option(tiny_model, tmp_path, texts):
    from m3lit.encode import main

    tiny_model.eval().save_pretrained(tmp_path / "m")
    passages = [" ".join(texts[i : i + 4]).replace("\n", " ") for i in range(0, 12, 4)]  # one per line
    (tmp_path / "p.txt").write_text("\n".join(passages) + "\n", encoding="utf-8")
    argv = [f"model={tmp_path / 'm'}", f"input={tmp_path / 'p.txt'}", f"output_dir={tmp_path / 'out'}"]
    assert main([*argv, "max_length=128", "window=40", "progress=false"]) == 0
    want = np.stack([naive_windowed(tiny_model, p, 40, 128)[0] for p in passages])
    np.testing.assert_allclose(np.load(tmp_path / "out" / "dense.npy"), want, atol=1e-5)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("window=2", "window must be >= 3 (0 = off), got 2"),
        ("window=-5", "window must be >= 3"),
        ("batch_size=0", "batch_size must be >= 1"),
    ],
)
def test_encode_command_stops_on_a_bad_size_before_writing(
    tiny_model, tmp_path, command_error, option, message
):
    from m3lit.encode import main

    tiny_model.eval().save_pretrained(tmp_path / "m")
    (tmp_path / "p.txt").write_text("a passage\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = [f"model={tmp_path / 'm'}", f"input={tmp_path / 'p.txt'}", f"output_dir={out}", option]
    status, last = command_error(main, argv)
    assert status != 0 and message in last
    assert not out.exists()  # nothing half-written


@pytest.fixture(scope="module")
def short_model(tokenizer):
    """A tiny model that learnt 64 positions only: a long text is far beyond them."""
    import torch

    from m3lit.model import M3Model
    from m3lit.model.tiny import tiny_xlmr_config

    config = tiny_xlmr_config(
        len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=64
    )
    torch.manual_seed(0)
    return M3Model.from_config(config, tokenizer, colbert_dim=16).eval()


def test_windows_read_past_the_models_positions(short_model, tmp_path):
    """Issue 30 item 2: ``window`` reads the whole text (up to ``max_length``), not its first 64 tokens."""
    assert short_model.max_length == 64
    long_text = " ".join(builtin_docstrings()[:40])
    n_tokens = len(short_model.tokenizer(long_text)["input_ids"])
    assert n_tokens > 4 * 64
    out = encode_texts(short_model, [long_text], max_length=4096, sparse=True, colbert=True, window=64)
    dense, lexical, colbert, n_windows = naive_windowed(short_model, long_text, 64, 4096)
    assert n_windows == -(-(n_tokens - 2) // 62)  # every token is read
    np.testing.assert_allclose(out.dense[0], dense, atol=1e-5)
    assert_lexical_close(
        dict(zip(map(str, out.sparse[0][0]), out.sparse[0][1].tolist(), strict=True)), lexical
    )
    np.testing.assert_allclose(out.colbert[0], colbert, atol=1e-5)
    assert len(out.colbert[0]) == n_tokens - 1
    first = encode_texts(
        short_model, [long_text], max_length=64, sparse=True
    )  # one pass: the first 64 tokens
    assert np.abs(first.dense[0] - out.dense[0]).max() > 1e-4  # (a random model's CLS vectors are all alike)
    assert set(out.sparse[0][0]) > set(first.sparse[0][0])  # tokens beyond the 64th are read
    # the embedder and the corpus index read as far
    short_model.save_pretrained(tmp_path / "m")
    emb = M3Embedder(str(tmp_path / "m"), use_fp16=False, devices="cpu", passage_max_length=4096, window=64)
    np.testing.assert_allclose(emb.encode(long_text)["dense_vecs"], dense, atol=1e-5)
    cfg = RetrievalConfig(batch_size=2, passage_max_len=4096, passage_window=64)
    index = index_corpus(short_model, [long_text], {"dense"}, cfg, vocab=len(short_model.tokenizer))
    np.testing.assert_allclose(index.dense.vectors[0], dense, atol=1e-5)
    with pytest.raises(ValueError, match="window=65 exceeds the model's 64 positions"):
        encode_texts(short_model, [long_text], max_length=4096, window=65)


def test_mcls_with_windows_is_refused_everywhere(tiny_model, tmp_path, command_error):
    """Issue 30 item 3: one error, before any output: encode leaves no file, M3Embedder refuses the pair."""
    from m3lit.encode import main

    tiny_model.eval().save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="not both"):
        M3Embedder(str(tmp_path / "m"), devices="cpu", window=64, mcls_interval=64)
    (tmp_path / "p.txt").write_text("a passage\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = [f"model={tmp_path / 'm'}", f"input={tmp_path / 'p.txt'}", f"output_dir={out}"]
    status, last = command_error(main, [*argv, "mcls=true", "window=64"])
    assert status == 2 and last.startswith("error: encode: mcls=true with window=64: choose MCLS")
    assert not out.exists()
    status, last = command_error(main, [*argv, "window=129"])
    assert status == 2 and "window=129 exceeds the model's 128 positions" in last
    assert not out.exists()


def test_evaluate_refuses_a_window_beyond_the_models_positions(
    short_model, tiny_beir_dir, tmp_path, command_error
):
    """A window the encoder cannot hold is one ``error:`` line naming the key, before any output folder (it
    used to pass silently: every text was cut to the positions first)."""
    from m3lit.evaluate import main

    short_model.save_pretrained(tmp_path / "m")
    out = tmp_path / "out"
    argv = [f"model={tmp_path / 'm'}", f"data={tiny_beir_dir}", f"output_dir={out}", "progress=false"]
    status, last = command_error(main, [*argv, "modes=[dense]", "retrieval.passage_window=65"])
    assert (status, last) == (
        2,
        "error: retrieval.passage_window=65 exceeds the model's 64 positions; use retrieval.passage_window <= 64",
    )
    assert not out.exists()
