"""Hard-negative mining: negatives come from the dense ranking's [lo, hi) ranks, never a positive or the query."""

from __future__ import annotations

import json
import random

import pytest
import torch
from m3_reference import fused_score, naive_encode

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


# ------------------------------------------------------------------------------- false-negative filters
def _midpoint_threshold(values, rank):
    """A threshold between two neighbouring distinct values near the ``rank``-th, at least 1e-3 apart, so that no
    value lies within float noise of it."""
    ordered = sorted(set(values))
    gaps = [i for i in range(len(ordered) - 1) if ordered[i + 1] - ordered[i] > 1e-3]
    i = min(gaps, key=lambda i: abs(i - rank))
    return (ordered[i] + ordered[i + 1]) / 2


@pytest.fixture
def spread_model(tiny_model):
    """The tiny model with larger random weights: its dense scores spread over ~0.2-0.9 (the plain tiny
    model's all lie within 1e-5 of each other, too close to tell a filter's edge from float noise)."""
    torch.manual_seed(0)
    for module in tiny_model.encoder.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.5)
    torch.nn.init.normal_(tiny_model.encoder.embeddings.word_embeddings.weight, std=1.0)
    return tiny_model


def _expected_removals(rows, pool, scores, failing):
    """Per filter, how many non-banned candidates ``failing(score, pos_score)`` names, and the union count."""
    counts, union, considered, banned_out = {}, 0, 0, []
    for row, row_scores in zip(rows, scores, strict=True):
        pos_score = min(row_scores[pool.index(p)] for p in row["pos"])
        bad = set()
        for i, text in enumerate(pool):
            if text in row["pos"] or text == row["query"]:
                continue
            considered += 1
            names = failing(row_scores[i], pos_score)
            for name in names:
                counts[name] = counts.get(name, 0) + 1
            if names:
                bad.add(text)
                union += 1
        banned_out.append(bad)
    return counts, union, considered, banned_out


@pytest.mark.parametrize("name", ["max_score", "absolute_margin", "relative_margin", "all three"])
def test_each_filter_removes_exactly_the_candidates_it_should(spread_model, tmp_path, mining_input, name):
    from m3lit.corpora.mining import NegativeFilters

    path, pool_path, rows, pool = mining_input
    scores = _naive_ranking(spread_model, [r["query"] for r in rows], pool)
    flat = [s for row_scores in scores for s in row_scores]
    pos = [
        min(row_scores[pool.index(p)] for p in row["pos"])
        for row, row_scores in zip(rows, scores, strict=True)
    ]
    gaps = [p - s for p, row_scores in zip(pos, scores, strict=True) for s in row_scores]
    relative = next(
        r for r in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
        if all(abs(s - p * (1 - r)) > 1e-3 for p, row_scores in zip(pos, scores, strict=True) for s in row_scores)
    )  # fmt: skip
    settings = {
        "max_score": _midpoint_threshold(flat, len(set(flat)) // 2),
        "absolute_margin": max(0.0, _midpoint_threshold(gaps, len(set(gaps)) // 3)),
        "relative_margin": relative,
    }
    chosen = settings if name == "all three" else {name: settings[name]}
    filters = NegativeFilters(**chosen)
    want, union, considered, removed = _expected_removals(rows, pool, scores, filters.failing)
    assert union > 0  # the constructed case removes something
    out = tmp_path / "out.jsonl"
    result = mine_hard_negatives(
        spread_model, path, out, candidate_pool=pool_path, rank_range=(0, len(pool)), negative_number=3,
        filters=filters, write_scores=True, query_max_len=64, passage_max_len=64, seed=3,
    )  # fmt: skip
    assert result.removed_by == {key: want.get(key, 0) for key in chosen}
    assert (result.removed, result.considered) == (union, considered)
    mined = [json.loads(line) for line in out.read_text().splitlines()]
    for row, got, row_scores, bad in zip(rows, mined, scores, removed, strict=True):
        assert not set(got["neg"]) & bad and not set(got["neg"]) & set(row["pos"])
        assert got["neg_scores"] == pytest.approx([row_scores[pool.index(t)] for t in got["neg"]], abs=1e-5)
        assert got["pos_scores"] == pytest.approx([row_scores[pool.index(t)] for t in row["pos"]], abs=1e-5)


@pytest.mark.parametrize("candidates", ["sparse", "all"])
def test_sparse_and_all_candidates_write_their_own_aligned_scores(
    tiny_model, tmp_path, mining_input, candidates
):
    from m3lit.corpora.mining import CANDIDATES

    path, pool_path, rows, pool = mining_input
    out = tmp_path / "out.jsonl"
    mine_hard_negatives(
        tiny_model, path, out, candidate_pool=pool_path, rank_range=(0, 5), negative_number=3,
        candidates=candidates, write_scores=True, query_max_len=64, passage_max_len=64,
    )  # fmt: skip
    encoded = {t: naive_encode(tiny_model, t, max_length=64) for t in pool}
    for row, got in zip(rows, (json.loads(line) for line in out.read_text().splitlines()), strict=True):
        q = naive_encode(tiny_model, row["query"], max_length=64)
        score = {t: fused_score(q, encoded[t], CANDIDATES[candidates]) for t in pool}
        assert got["neg_scores"] == pytest.approx([score[t] for t in got["neg"]], abs=1e-4)
        assert got["pos_scores"] == pytest.approx([score[t] for t in row["pos"]], abs=1e-4)
        if candidates == "sparse":  # the top-5 by s_lex, the positives and ties at the edge aside
            allowed = sorted(score.values(), reverse=True)[4] - 1e-5
            assert all(score[t] >= allowed for t in got["neg"])


def test_command_line_filters_and_report(tiny_model, tmp_path, mining_input, command_error):
    path, pool_path, _, _ = mining_input
    model_dir = tiny_model.save_pretrained(tmp_path / "model")
    out = tmp_path / "cli.jsonl"
    main([f"model={model_dir}", f"input={path}", f"output={out}", f"candidate_pool={pool_path}", "range=0-20",
          "negative_number=3", "device=cpu", "absolute_margin=0.0", "max_score=0.5"])  # fmt: skip
    report = json.loads((tmp_path / "cli.jsonl.report.json").read_text())
    assert report["filters"] == {"max_score": 0.5, "absolute_margin": 0.0}
    assert set(report["removed_by"]) == {"max_score", "absolute_margin"} and report["considered"] > 0
    args = [f"model={model_dir}", f"input={path}", f"output={out}"]
    assert command_error(main, [*args, "relative_margin=1.5"]) == (
        2,
        "error: relative_margin must lie in [0, 1), got 1.5",
    )
    assert command_error(main, [*args, "max_score=high"])[0] == 2
    assert command_error(main, [*args, "candidates=bm25"])[0] == 2
