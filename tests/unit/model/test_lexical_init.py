"""The idf-fitted start of the lexical head (m3lit.model.lexical_init, model.net.sparse_init_idf), against
idf and a ridge regression computed here from their formulas."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from m3lit.model.lexical_init import fit_lexical_head, token_idf
from m3lit.training.build import NetOptions, build_m3_model


def test_bm25_idf_matches_the_formula():
    docs = [[1, 2, 2, 3], [2, 4], [2, 3, 5], [6]]
    idf = token_idf(docs)
    n = 4
    for token, df in {1: 1, 2: 3, 3: 2, 4: 1, 5: 1, 6: 1}.items():
        assert idf[token] == pytest.approx(math.log(1 + (n - df + 0.5) / (df + 0.5)))
    assert set(idf) == {1, 2, 3, 4, 5, 6}


def test_fit_equals_a_direct_ridge_regression_on_sqrt_idf(tiny_model, texts):
    ridge, mean_weight, sample = 0.5, 0.2, 7
    r2 = fit_lexical_head(
        tiny_model, texts, sample=sample, mean_weight=mean_weight, ridge=ridge, max_length=48, seed=3
    )
    tok = tiny_model.tokenizer
    ids_all = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    n = len(texts)
    df = {t: sum(t in set(d) for d in ids_all) for d in ids_all for t in d}
    chosen = sorted(random.Random(3).sample(range(n), sample))
    rows, target = [], []
    tiny_model.eval()
    with torch.no_grad():
        for i in chosen:  # one text at a time: no padding at all
            enc = tok(texts[i], truncation=True, max_length=48, return_tensors="pt")
            hidden = tiny_model.encoder(**enc).last_hidden_state[0].double().numpy()
            for pos, t in enumerate(enc["input_ids"][0].tolist()):
                if t not in tok.all_special_ids:
                    rows.append(hidden[pos])
                    target.append(math.sqrt(math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))))
    x, y = np.array(rows), np.array(target)
    y *= mean_weight / y.mean()
    xb = np.hstack([x, np.ones((len(x), 1))])
    penalty = ridge * np.eye(xb.shape[1])
    penalty[-1, -1] = 0
    coef = np.linalg.solve(xb.T @ xb + penalty, xb.T @ y)
    linear = tiny_model.sparse_head.linear
    np.testing.assert_allclose(linear.weight.detach().double().numpy()[0], coef[:-1], rtol=1e-4, atol=1e-5)
    assert float(linear.bias.detach()) == pytest.approx(coef[-1], rel=1e-4, abs=1e-6)
    fitted = xb @ coef
    assert r2 == pytest.approx(1 - ((fitted - y) ** 2).sum() / ((y - y.mean()) ** 2).sum(), abs=1e-6)
    assert fitted.mean() == pytest.approx(mean_weight, rel=1e-6)  # an unpenalised bias keeps the mean


def test_build_option_reads_jsonl_texts_and_excludes_the_other_starts(tokenizer, tmp_path, texts):
    tokenizer.save_pretrained(tmp_path / "tok")
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(
            json.dumps({"query": q, "pos": [p]}) + "\n" for q, p in zip(texts[::2], texts[1::2], strict=True)
        )
    )
    init = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_length": 64}
    torch.manual_seed(0)
    model = build_m3_model(
        NetOptions(
            None,
            tokenizer=str(tmp_path / "tok"),
            init=init,
            sparse_init_idf={"texts": str(data), "sample": 4},
        )
    )
    torch.manual_seed(0)
    again = build_m3_model(
        NetOptions(
            None,
            tokenizer=str(tmp_path / "tok"),
            init=init,
            sparse_init_idf={"texts": [str(data)], "sample": 4},
        )
    )
    assert torch.equal(model.sparse_head.linear.weight, again.sparse_head.linear.weight)
    assert model.sparse_head.linear.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="sparse_init_idf excludes"):
        build_m3_model(
            NetOptions(
                None,
                tokenizer=str(tmp_path / "tok"),
                init=init,
                sparse_init_idf={"texts": str(data)},
                sparse_init_uniform=0.1,
            )
        )
    with pytest.raises(FileNotFoundError, match=r"sparse_init_idf.texts=.*missing.jsonl: no such file"):
        build_m3_model(
            NetOptions(
                None,
                tokenizer=str(tmp_path / "tok"),
                init=init,
                sparse_init_idf={"texts": str(tmp_path / "missing.jsonl")},
            )
        )
    with pytest.raises(ValueError, match="sparse_init_idf: .*unexpected keyword argument 'samples'"):
        build_m3_model(
            NetOptions(
                None,
                tokenizer=str(tmp_path / "tok"),
                init=init,
                sparse_init_idf={"texts": str(data), "samples": 4},
            )
        )
