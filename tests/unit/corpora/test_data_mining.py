"""Hard-negative mining: negatives come from the dense ranking's [lo, hi) ranks, never a positive or the query."""

from __future__ import annotations

import json
import random

import pytest
import torch

from m3lit.corpora.mining import main, mine_hard_negatives, parse_range


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _naive_ranking(model, queries, pool):
    """Dense scores computed directly from the model, one text at a time, no padding."""
    model.eval()

    def embed(text):
        ids = model.tokenizer(text, truncation=True, max_length=64, return_tensors="pt")
        with torch.no_grad():
            return model(ids["input_ids"], ids["attention_mask"], sparse=False, colbert=False).dense[0]

    p = torch.stack([embed(t) for t in pool])
    return [(p @ embed(q)).tolist() for q in queries]


def _in_ranks(scores, lo, hi, tol=1e-5):
    """Pool rows whose score puts them at ranks [lo, hi), with a tolerance for float ties at the edges."""
    ordered = sorted(scores, reverse=True)
    return {i for i, x in enumerate(scores) if ordered[hi - 1] - tol <= x <= ordered[lo] + tol}


@pytest.fixture
def mining_input(tmp_path, texts):
    words = " ".join(texts).split()
    rng = random.Random(0)
    pool = [t[:200] for t in texts] + [" ".join(rng.sample(words, 12)) for _ in range(20)]  # distinct texts
    rows = [
        {
            "query": f"question {i}",
            "pos": [pool[i]],
            "neg": [pool[i + 1]],
            "pos_scores": [1.0],
            "neg_scores": [0.5],
            "category": "c",
        }
        for i in range(6)
    ]
    return (
        _write(tmp_path / "in.jsonl", rows),
        _write(tmp_path / "pool.jsonl", [{"text": t} for t in pool]),
        rows,
        pool,
    )


def test_mined_negatives_come_from_the_rank_range(tiny_model, tmp_path, mining_input):
    path, pool_path, rows, pool = mining_input
    out = tmp_path / "out.jsonl"
    result = mine_hard_negatives(
        tiny_model,
        path,
        out,
        candidate_pool=pool_path,
        rank_range=(2, 12),
        negative_number=4,
        query_max_len=64,
        passage_max_len=64,
        seed=1,
    )
    assert (result.lines, result.pool, result.filled_randomly) == (6, len(pool), 0)
    scores = _naive_ranking(tiny_model, [r["query"] for r in rows], pool)
    mined = [json.loads(line) for line in out.read_text().splitlines()]
    for row, got, row_scores in zip(rows, mined, scores, strict=True):
        allowed = {pool[i] for i in _in_ranks(row_scores, 2, 12)} - set(row["pos"])
        assert len(got["neg"]) == 4 and len(set(got["neg"])) == 4 and set(got["neg"]) <= allowed
        assert got["query"] == row["query"] and got["pos"] == row["pos"] and got["category"] == "c"
        assert "pos_scores" not in got and "neg_scores" not in got  # no longer aligned: dropped
    again = tmp_path / "again.jsonl"
    mine_hard_negatives(
        tiny_model,
        path,
        again,
        candidate_pool=pool_path,
        rank_range=(2, 12),
        negative_number=4,
        query_max_len=64,
        passage_max_len=64,
        seed=1,
    )
    assert again.read_bytes() == out.read_bytes()  # seeded


def test_fill_up_and_default_pool(tiny_model, tmp_path, mining_input):
    path, _, rows, _ = mining_input
    out = tmp_path / "out.jsonl"
    # the default pool is the input's own passages: 7 distinct texts; ranks [0, 3) leave < 5 candidates
    result = mine_hard_negatives(
        tiny_model, path, out, rank_range=(0, 3), negative_number=5, passage_max_len=64
    )
    assert result.pool == 7 and result.filled_randomly == 6
    for row, got in zip(rows, (json.loads(line) for line in out.read_text().splitlines()), strict=True):
        assert len(got["neg"]) == 5 and len(set(got["neg"])) == 5 and not set(got["neg"]) & set(row["pos"])


def test_command_line(tiny_model, tmp_path, mining_input, capsys):
    path, pool_path, _, _ = mining_input
    model_dir = tiny_model.save_pretrained(tmp_path / "model")
    out = tmp_path / "cli.jsonl"
    main([f"model={model_dir}", f"input={path}", f"output={out}", f"candidate_pool={pool_path}", "range=1-10",
          "negative_number=3", "device=cpu"])  # fmt: skip
    assert len(out.read_text().splitlines()) == 6
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["lines"] == 6
    with pytest.raises(ValueError, match="lo < hi"):
        parse_range("5-5")
