"""Paired significance between table rows (m3lit.retrieval.report.significance, python -m m3lit.compare).

References are written out here: the exact randomisation p-value by enumerating every sign vector,
nDCG@10 of each query from its TREC lines and qrels by the textbook formula, and trec_eval's ordering.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil

import numpy as np
import pytest

from m3lit.compare import main as compare_main
from m3lit.files.jsonl import DataError
from m3lit.retrieval import load_beir
from m3lit.retrieval.index.ranking import Ranking
from m3lit.retrieval.metrics import evaluate_ranking, per_query_metric
from m3lit.retrieval.report.significance import compare_runs, paired_randomization_test
from m3lit.retrieval.trec import read_trec_run, write_trec_run


def exact_p(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    """Two-sided p over all 2^n sign vectors (the distribution the Monte-Carlo test samples)."""
    wd = w * (a - b)
    observed = abs(wd.sum())
    flips = [
        abs(np.dot(signs, wd)) >= observed - 1e-12 for signs in itertools.product((-1, 1), repeat=a.size)
    ]
    return float(np.mean(flips))


def test_randomization_p_value_matches_exact_enumeration():
    rng = np.random.default_rng(3)
    a, b = rng.random(11), rng.random(11)
    b[:6] -= 0.3  # a real but noisy gap
    for w in (np.full(11, 1 / 11), rng.random(11)):
        diff, p = paired_randomization_test(a, b, w, resamples=200_000, seed=1)
        assert diff == pytest.approx(float((w * (a - b)).sum()), abs=1e-12)
        assert p == pytest.approx(exact_p(a, b, w), abs=0.005)
    same = paired_randomization_test(a, a, resamples=1000)
    assert same == (0.0, 1.0)  # identical systems: every flip is as extreme
    assert paired_randomization_test(a, b, resamples=500, seed=7) == paired_randomization_test(
        a, b, resamples=500, seed=7
    )
    with pytest.raises(ValueError, match="need two"):
        paired_randomization_test(a, b[:5])


def naive_ndcg10(ranked: list[str], grades: dict[str, int]) -> float:
    dcg = sum(grades.get(d, 0) / math.log2(r + 2) for r, d in enumerate(ranked[:10]))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:10]
    return dcg / sum(g / math.log2(r + 2) for r, g in enumerate(ideal))


def test_per_query_metric_is_what_evaluate_ranking_averages(tiny_beir_dir):
    data = load_beir(tiny_beir_dir)
    rng = np.random.default_rng(0)
    indices = np.stack([rng.permutation(len(data.corpus_ids))[:15] for _ in data.query_ids])
    ranking = Ranking(indices, np.sort(rng.random(indices.shape).astype(np.float32))[:, ::-1].copy())
    rows, values = per_query_metric(ranking, data.qrels, "ndcg@10")
    assert rows.tolist() == [q for q, judged in enumerate(data.qrels) if any(g > 0 for g in judged.values())]
    for q, value in zip(rows, values, strict=True):
        ranked = [data.corpus_ids[d] for d in indices[q]]
        grades = {data.corpus_ids[d]: g for d, g in data.qrels[q].items()}
        assert value == pytest.approx(naive_ndcg10(ranked, grades), abs=1e-6)
    assert values.mean() == pytest.approx(
        evaluate_ranking(ranking, data.qrels, ["ndcg@10"]).values["ndcg@10"]
    )


def test_trec_run_round_trips_and_orders_ties_as_trec_eval(tiny_beir_dir, tmp_path):
    data = load_beir(tiny_beir_dir)
    ranking = Ranking(
        np.array([[4, 1, 7]] + [[2, 3, -1]] * (len(data.query_ids) - 1)),
        np.array([[3.0, 2.0, 2.0]] + [[1.0, 0.5, -np.inf]] * (len(data.query_ids) - 1), np.float32),
    )
    path = write_trec_run(tmp_path / "run.trec", ranking, data, "x")
    back = read_trec_run(path, data)
    np.testing.assert_array_equal(back.indices, ranking.indices)  # the written tie-break survives
    # an external file with tied scores: trec_eval sorts by score, then docid descending
    qid = data.query_ids[0]
    path.write_text(f"{qid} Q0 d1 1 1.0 x\n{qid} Q0 d2 2 1.0 x\n{qid} Q0 d10 3 2.0 x\n")
    back = read_trec_run(path, data)
    assert [data.corpus_ids[d] for d in back.indices[0]] == ["d10", "d2", "d1"]
    assert (back.indices[1:] == -1).all()  # queries absent from the file: empty lists
    for text, problem in (
        (f"{qid} Q0 d1 1 1.0\n", "line 1.*expected 6 columns"),
        (f"{qid} Q0 d1 1 high x\n", "line 1.*not a number"),
        (f"{qid} Q0 d1 1 1.0 x\nnope Q0 d1 1 1.0 x\n", "line 2.*unknown query id 'nope'"),
        (f"{qid} Q0 d1 1 1.0 x\n{qid} Q0 d1 2 0.5 x\n", "line 2.*listed twice"),
    ):
        path.write_text(text)
        with pytest.raises(DataError, match=problem):
            read_trec_run(path, data)


@pytest.fixture(scope="module")
def evaluated(tiny_config, tokenizer, tiny_beir_dir, tmp_path_factory):
    """Two evaluations of one random model (two datasets, then a second run with other weights)."""
    import torch

    from m3lit.evaluate import main
    from m3lit.model import M3Model

    root = tmp_path_factory.mktemp("compare")
    torch.manual_seed(0)
    model = M3Model.from_config(tiny_config, tokenizer, colbert_dim=16)
    with torch.no_grad():
        model.sparse_head.linear.bias.fill_(0.5)
    export = model.save_pretrained(root / "export")
    for lang in ("xx", "yy"):
        shutil.copytree(tiny_beir_dir, root / "data" / lang)
    common = [f"model={export}", f"data=[{root / 'data' / 'xx'},{root / 'data' / 'yy'}]", "progress=false",
              "retrieval.query_max_len=64", "retrieval.passage_max_len=64", "modes=[dense,sparse,dense+sparse,bm25]"]  # fmt: skip
    main([*common, f"output_dir={root / 'one'}"])
    main([*common, f"output_dir={root / 'two'}", "retrieval.hybrid_weights=[1.0,5.0]"])
    return root


def test_compare_runs_tests_each_cell_and_the_average_from_the_trec_files(evaluated):
    data = load_beir(evaluated / "data" / "xx")
    results = json.loads((evaluated / "one" / "results.json").read_text())["results"]
    got = compare_runs(evaluated / "one", "dense+sparse", "bm25", resamples=4000, seed=5)["datasets"]
    assert [c.name for c in got] == ["xx", "yy", "Avg"]
    per_query = {}
    for mode in ("dense+sparse", "bm25"):
        lines = [
            ln.split() for ln in (evaluated / "one" / "runs" / "xx" / f"{mode}.trec").read_text().splitlines()
        ]
        values = []
        for q, qid in enumerate(data.query_ids):
            grades = {data.corpus_ids[d]: g for d, g in data.qrels[q].items()}
            if any(g > 0 for g in grades.values()):
                ranked = sorted((ln for ln in lines if ln[0] == qid), key=lambda ln: -float(ln[4]))
                values.append(naive_ndcg10([ln[2] for ln in ranked], grades))
        per_query[mode] = np.array(values)
        assert per_query[mode].mean() == pytest.approx(results["xx"][mode]["ndcg@10"], abs=1e-6)
    xx = got[0]
    assert xx.mean_a == pytest.approx(per_query["dense+sparse"].mean(), abs=1e-6)
    assert xx.mean_b == pytest.approx(per_query["bm25"].mean(), abs=1e-6)
    assert xx.num_queries == 10
    diff, p_value = paired_randomization_test(
        per_query["dense+sparse"], per_query["bm25"], resamples=4000, seed=5
    )
    assert xx.difference == pytest.approx(diff, abs=1e-6)  # float32 metric values against float64 ones
    assert xx.p_value == p_value  # the same seed: the same sign vectors
    # the two datasets are copies: the average's difference is theirs, over twice the queries
    avg = got[2]
    assert avg.num_queries == 20 and avg.difference == pytest.approx(xx.difference, abs=1e-9)
    assert avg.mean_a == pytest.approx((got[0].mean_a + got[1].mean_a) / 2)
    # the same row of two runs, and another metric
    other = compare_runs(evaluated / "one", "dense+sparse", "dense+sparse", b_run=evaluated / "two",
                         metric="recall@100", resamples=100)["datasets"]  # fmt: skip
    assert other[0].mean_b == pytest.approx(
        json.loads((evaluated / "two" / "results.json").read_text())["results"]["xx"]["dense+sparse"][
            "recall@100"
        ],
        abs=1e-6,
    )


def test_compare_command_prints_the_table_and_stops_on_bad_input(evaluated, tmp_path, capsys, command_error):
    out = tmp_path / "cmp.json"
    payload = compare_main(
        [f"run={evaluated / 'one'}", "a=sparse", "b=dense", "resamples=200", f"output={out}"]
    )
    printed = capsys.readouterr().out
    assert "| **Avg** |" in printed and "A = sparse, B = dense" in printed
    assert json.loads(out.read_text())["comparison"] == json.loads(json.dumps(payload))
    code, line = command_error(compare_main, [f"run={evaluated / 'one'}", "a=colbert"])
    assert code == 1 and "colbert.trec" in line and "no TREC run for 'colbert'" in line
    code, line = command_error(compare_main, [f"run={tmp_path}"])
    assert code == 1 and "no results.json" in line
    code, line = command_error(compare_main, [f"run={evaluated / 'one'}", "task=MIRACL-like"])
    assert code == 2 and "not a suite evaluation" in line
    code, line = command_error(compare_main, [f"run={evaluated / 'one'}", "colour=red"])
    assert code == 2 and "colour" in line
    # the data changed after the evaluation: the recorded qrels no longer hold
    qrels = evaluated / "data" / "yy" / "qrels" / "test.tsv"
    saved = qrels.read_text()
    try:
        qrels.write_text(saved.replace("\t1\n", "\t2\n", 1))
        code, line = command_error(compare_main, [f"run={evaluated / 'one'}", "a=dense+sparse"])
        assert code == 1 and "changed since" in line and "yy" in line
    finally:
        qrels.write_text(saved)
