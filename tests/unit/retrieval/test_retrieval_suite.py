"""Benchmark suites (m3lit.retrieval.suite): rows per system and mode, columns per language, averages."""

from __future__ import annotations

import json
import shutil

import pytest

from m3lit.retrieval import evaluate_retrieval
from m3lit.retrieval.options import EvaluationOptions
from m3lit.retrieval.report.chart import write_chart
from m3lit.retrieval.report.provenance import read_results
from m3lit.retrieval.report.write import write_suite_reports
from m3lit.retrieval.suite import SuiteSystem, evaluate_suite, load_suite


@pytest.fixture
def suite_dir(tmp_path, tiny_beir_dir):
    for lang in ("xx", "yy"):
        shutil.copytree(tiny_beir_dir, tmp_path / "task" / lang)
    spec = {
        "name": "toy",
        "tasks": [
            {
                "name": "Toy-task",
                "metrics": ["ndcg@10", "recall@20"],
                "datasets": {"xx": "task/xx", "yy": "task/yy"},
                "retrieval": {"passage_max_len": 64},
            }
        ],
    }
    (tmp_path / "suite.json").write_text(json.dumps(spec), encoding="utf-8")
    return tmp_path


def test_suite_rows_equal_direct_evaluation_and_averages_are_means(suite_dir, tiny_model, tmp_path):
    tiny_model.heads_loaded = True
    tasks = load_suite(suite_dir)
    main = SuiteSystem("", tiny_model, ("dense", "sparse", "all"))
    released = SuiteSystem("released", tiny_model, ("dense",), {"query_max_len": 8})
    results = evaluate_suite([main, released], tasks)
    block = results["Toy-task"]
    assert block["languages"] == ["xx", "yy"]
    assert list(block["rows"]) == ["BM25", "released (Dense)", "Dense", "Sparse", "All"]  # the paper's order

    direct = evaluate_retrieval(
        tiny_model,
        suite_dir / "task" / "xx",
        modes=["dense", "sparse", "all", "bm25"],
        metrics=["ndcg@10", "recall@20"],
        config={"passage_max_len": 64},
    )
    for mode, label in (("dense", "Dense"), ("sparse", "Sparse"), ("all", "All"), ("bm25", "BM25")):
        assert block["rows"][label]["xx"] == pytest.approx(direct[mode], abs=0)
    short = evaluate_retrieval(
        tiny_model, suite_dir / "task" / "yy", modes=["dense"], metrics=["ndcg@10", "recall@20"],
        config={"passage_max_len": 64, "query_max_len": 8},
    )  # fmt: skip
    assert block["rows"]["released (Dense)"]["yy"] == pytest.approx(short["dense"], abs=0)

    table = write_suite_reports(results, tmp_path / "out", suite="toy", settings={"seed": 1})
    written, settings = read_results(tmp_path / "out")
    assert settings == {"seed": 1}
    dense = block["rows"]["Dense"]
    mean = (dense["xx"]["ndcg@10"] + dense["yy"]["ndcg@10"]) / 2
    assert written["averages"]["Toy-task"]["Dense"]["ndcg@10"] == pytest.approx(mean)
    row = next(line for line in table.splitlines() if line.startswith("| Dense |"))
    assert row.endswith(f"| {100 * mean:.1f} |")
    summary = table[table.index("### Averages over the languages") :].splitlines()
    assert summary[2] == "| Method | Toy-task nDCG@10 (xx/yy) | Toy-task Recall@20 (xx/yy) |"
    recall = (dense["xx"]["recall@20"] + dense["yy"]["recall@20"]) / 2
    dense_row = next(line for line in summary if line.startswith("| Dense |"))
    assert dense_row == f"| Dense | {100 * mean:.1f} | {100 * recall:.1f} |"
    assert (tmp_path / "out" / "results.md").read_text().endswith(table)
    assert (tmp_path / "out" / "results.png").stat().st_size > 0


def test_suite_file_errors_name_the_file_and_task(tmp_path):
    (tmp_path / "suite.json").write_text(
        json.dumps({"tasks": [{"name": "T", "metrics": ["ndcg@10"], "datasets": {"en": "missing"}}]})
    )
    with pytest.raises(FileNotFoundError, match=r"suite.json: tasks\[0\] \(T\) en: no corpus.jsonl"):
        load_suite(tmp_path)
    (tmp_path / "suite.json").write_text('{"tasks": [{"name": "T"}]}')
    with pytest.raises(ValueError, match=r"tasks\[0\] has no 'metrics'"):
        load_suite(tmp_path)


def test_corpus_cache_reuses_only_an_identical_corpus_encoding(suite_dir, tiny_model, caplog):
    import logging

    tiny_model.heads_loaded = True
    modes, cfg = ["dense", "sparse", "colbert", "all"], {"passage_max_len": 64}
    fresh = evaluate_retrieval(tiny_model, suite_dir / "task" / "yy", modes=modes, config=cfg)
    cache: dict = {}
    with caplog.at_level(logging.INFO, logger="m3lit.retrieval.index.search"):
        evaluate_retrieval(tiny_model, suite_dir / "task" / "xx", modes=modes, config=cfg, corpus_cache=cache)
        assert "reused" not in caplog.text
        again = evaluate_retrieval(
            tiny_model, suite_dir / "task" / "yy", modes=modes, config=cfg, corpus_cache=cache
        )
        assert "corpus encoding reused" in caplog.text
    assert again == fresh  # same corpus texts and settings: identical numbers
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="m3lit.retrieval.index.search"):
        evaluate_retrieval(
            tiny_model,
            suite_dir / "task" / "yy",
            modes=modes,
            config={"passage_max_len": 32},
            corpus_cache=cache,
        )
    assert "reused" not in caplog.text  # another passage length: encoded again


def test_corpus_cache_keeps_two_corpora_so_a_corpus_seen_before_the_last_is_reused(
    suite_dir, tiny_model, caplog
):
    import logging

    tiny_model.heads_loaded = True
    modes, folder = ["dense", "sparse", "colbert"], suite_dir / "task" / "xx"
    cache: dict = {}
    with caplog.at_level(logging.INFO, logger="m3lit.retrieval.index.search"):
        first = evaluate_retrieval(
            tiny_model, folder, modes=modes, config={"passage_max_len": 64}, corpus_cache=cache
        )
        evaluate_retrieval(
            tiny_model, folder, modes=modes, config={"passage_max_len": 32}, corpus_cache=cache
        )
        assert "reused" not in caplog.text
        again = evaluate_retrieval(
            tiny_model, folder, modes=modes, config={"passage_max_len": 64}, corpus_cache=cache
        )
        assert caplog.text.count("corpus encoding reused") == 1
        for length in (16, 24):  # two others push the 64-token encoding out
            evaluate_retrieval(
                tiny_model, folder, modes=modes, config={"passage_max_len": length}, corpus_cache=cache
            )
        evaluate_retrieval(
            tiny_model, folder, modes=modes, config={"passage_max_len": 64}, corpus_cache=cache
        )
        assert caplog.text.count("corpus encoding reused") == 1
    assert again == first
    assert len(cache) == 2


def test_a_suite_table_is_reproduced_from_its_results_json(suite_dir, tiny_model, tmp_path):
    """`python -m m3lit.evaluate settings=<results.json>` re-runs a suite evaluation to the last digit."""
    from m3lit.evaluate import main
    from m3lit.retrieval.suite import run_suite

    tiny_model.heads_loaded = True
    folder = tiny_model.save_pretrained(tmp_path / "model")
    reference = {
        "name_or_path": str(folder),
        "label": "released",
        "retrieval": {"pooling": "mean", "query_prefix": "q: "},
    }
    options = EvaluationOptions(
        suite=str(suite_dir), reference=reference, modes=("dense", "sparse", "all", "bm25"),
        retrieval={"batch_size": 7, "all_weights": [1.0, 0.5, 2.0]},
    )  # fmt: skip
    first = run_suite(tiny_model, options, tmp_path / "first", model_ref=str(folder))
    again = main(
        [
            f"settings={tmp_path / 'first' / 'results.json'}",
            f"output_dir={tmp_path / 'again'}",
            "progress=false",
        ]
    )
    assert again == first
    assert (tmp_path / "again" / "results.md").read_text() == (tmp_path / "first" / "results.md").read_text()
    assert (tmp_path / "again" / "runs" / "Toy-task" / "xx" / "released" / "dense.trec").is_file()
    # results.md ends with the paired tests of All against BM25 and the released model, as m3lit.compare gives them
    from m3lit.retrieval.report.significance import compare_runs, format_p

    report = (tmp_path / "first" / "results.md").read_text()
    for other, label in (("bm25", "BM25"), ("released/dense", "released (Dense)")):
        avg = compare_runs(tmp_path / "first", "all", other)["Toy-task"][-1]
        row = f"| Toy-task | ndcg@10 | {100 * avg.mean_a:.1f} | {label} | {100 * avg.mean_b:.1f} | {100 * avg.difference:+.2f} | {format_p(avg.p_value)} | 20 |"
        assert row in report
    label = f"{folder.parent.name}/{folder.name}"  # the CLI's legend label: the model path's last two parts
    expected = write_chart(tmp_path / "expected.png", first, label=label, title="toy")
    assert (tmp_path / "again" / "results.png").read_bytes() == expected.read_bytes()  # reference bars too
    changed = main([f"settings={tmp_path / 'first' / 'results.json'}", f"output_dir={tmp_path / 'other'}",
                    "progress=false", "retrieval.all_weights=[0.0,1.0,0.0]"])  # fmt: skip
    assert changed["Toy-task"]["rows"]["All"] != first["Toy-task"]["rows"]["All"]  # the settings matter


@pytest.fixture
def dev_suite_dir(tmp_path):
    """Two languages of one task whose folders hold test and dev queries (qrels/test.tsv, qrels/dev.tsv)."""
    from conftest import builtin_docstrings

    from m3lit.retrieval.beir import write_beir

    docs = [text[:300] for text in builtin_docstrings()[:48]]
    for shift, lang in enumerate(("xx", "yy")):
        corpus = {f"d{i}": docs[(i + shift) % len(docs)] for i in range(len(docs))}
        queries = {f"q{j}": " ".join(corpus[f"d{3 * j}"].split()[2:9]) for j in range(16)}
        test = {f"q{j}": {f"d{3 * j}": 1, f"d{3 * j + 1}": 1} for j in range(8)}
        dev = {f"q{j}": {f"d{3 * j}": 1, f"d{3 * j + 2}": 1} for j in range(8, 16)}
        write_beir(tmp_path / "task" / lang, corpus, queries, test, dev=dev)
    spec = {"name": "toy", "tasks": [{
        "name": "Toy-task", "metrics": ["ndcg@10", "recall@20"], "datasets": {"xx": "task/xx", "yy": "task/yy"},
        "retrieval": {"passage_max_len": 48}, "dev_split": "dev", "extra_modes": ["dense+mcls"]}]}  # fmt: skip
    (tmp_path / "suite.json").write_text(json.dumps(spec), encoding="utf-8")
    return tmp_path


def test_tuned_fusion_weights_are_the_dev_best_and_rank_the_test_queries(dev_suite_dir, tiny_model, tmp_path):
    """With tune_fusion, the fused rows are the test queries ranked with the weights that score best on the
    dev queries (checked against direct evaluations of each split); every other row is unchanged."""
    from m3lit.retrieval.fusion_tuning import weight_grid
    from m3lit.retrieval.suite import run_suite

    tiny_model.heads_loaded = True
    modes = ["dense", "sparse", "dense+sparse", "all", "bm25"]
    options = EvaluationOptions(suite=str(dev_suite_dir), modes=tuple(modes), tune_fusion=True)
    results = run_suite(tiny_model, options, tmp_path / "tuned", model_ref="tiny")
    fixed = evaluate_suite([SuiteSystem("", tiny_model, tuple(modes[:-1]))], load_suite(dev_suite_dir))
    block, fusion = results["Toy-task"], results["Toy-task"]["fusion"]
    assert set(fusion) == {"dense+sparse", "all"}

    def direct(split, mode, **config):
        metrics = ["ndcg@10", "recall@20"]
        return {
            lang: evaluate_retrieval(
                tiny_model, dev_suite_dir / "task" / lang, split=split, modes=[mode], metrics=metrics,
                config={"passage_max_len": 48, **config},
            )[mode]
            for lang in ("xx", "yy")
        }  # fmt: skip

    def dev_mean(mode, weights):
        key = "hybrid_weights" if mode == "dense+sparse" else "all_weights"
        return sum(v["ndcg@10"] for v in direct("dev", mode, **{key: list(weights)}).values()) / 2

    every = {w: dev_mean("dense+sparse", w) for w in weight_grid("dense+sparse")}  # the whole grid
    chosen = tuple(fusion["dense+sparse"]["weights"])
    assert fusion["dense+sparse"]["dev"] == pytest.approx(max(every.values()), abs=1e-6)
    assert every[chosen] == pytest.approx(max(every.values()), abs=1e-6)
    assert fusion["dense+sparse"]["dev_default"] == pytest.approx(every[(1.0, 0.3)], abs=1e-6)
    chosen_all = tuple(fusion["all"]["weights"])
    assert fusion["all"]["dev"] == pytest.approx(dev_mean("all", chosen_all), abs=1e-6)
    assert fusion["all"]["dev_default"] == pytest.approx(dev_mean("all", (1.0, 0.3, 1.0)), abs=1e-6)
    for w in weight_grid("all")[::9]:  # a sample of the 77: none beats the choice on dev
        assert dev_mean("all", w) <= fusion["all"]["dev"] + 1e-6
    assert fusion["all"]["queries"] == {"xx": 8, "yy": 8}

    assert block["rows"]["Dense+Sparse"] == direct("test", "dense+sparse", hybrid_weights=list(chosen))
    assert block["rows"]["All"] == direct("test", "all", all_weights=list(chosen_all))
    for label in ("BM25", "Dense", "Sparse", "Dense+MCLS"):  # the task's extra mode too (MLDR-like's)
        assert block["rows"][label] == fixed["Toy-task"]["rows"][label]
    for mode, label in (("dense+sparse", "Dense+Sparse"), ("all", "All")):  # what the fixed weights score
        untuned = fixed["Toy-task"]["rows"][label]
        assert fusion[mode]["test_default"] == {lang: untuned[lang]["ndcg@10"] for lang in ("xx", "yy")}
    written, settings = read_results(tmp_path / "tuned")
    assert written["tasks"]["Toy-task"]["fusion"] == fusion and settings["tune_fusion"] is True
    assert settings["tasks"]["Toy-task"]["retrieval"] == {
        "passage_max_len": 48, "hybrid_weights": list(chosen), "all_weights": list(chosen_all)}  # fmt: skip
    report = (tmp_path / "tuned" / "results.md").read_text()
    assert "- All weights chosen on the dev queries (8 per language, nDCG@10)" in report
    untuned = sum(fusion["all"]["test_default"].values()) / 2
    assert f"there and {100 * untuned:.1f} on the test queries" in report


def test_a_tuned_suite_is_reproduced_from_its_results_json_and_needs_its_dev_files(
    dev_suite_dir, tiny_model, tmp_path
):
    from m3lit.evaluate import main
    from m3lit.retrieval.suite import run_suite

    tiny_model.heads_loaded = True
    folder = tiny_model.save_pretrained(tmp_path / "model")
    options = EvaluationOptions(
        suite=str(dev_suite_dir), modes=("dense", "sparse", "all", "bm25"), tune_fusion=True
    )
    first = run_suite(tiny_model, options, tmp_path / "first", model_ref=str(folder))
    again = main([f"settings={tmp_path / 'first' / 'results.json'}", f"output_dir={tmp_path / 'again'}",
                  "progress=false"])  # fmt: skip
    assert again == first and "fusion" in again["Toy-task"]
    (dev_suite_dir / "task" / "yy" / "qrels" / "dev.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"tasks\[0\] \(Toy-task\) yy: no qrels/dev.tsv"):
        load_suite(dev_suite_dir)


def test_run_evaluation_sends_suite_tables_to_table_loggers_and_keeps_the_training_flag(
    suite_dir, tiny_model, tmp_path
):
    """train() and the evaluate command share run_evaluation: a suite's tables reach every logger that takes
    tables (W&B's log_text), one per task and metric named <prefix>/<task>/<metric>, rows x100; a model in
    training mode is evaluated in eval mode and handed back in training mode."""
    from m3lit.evaluate import run_evaluation

    class TableLogger:  # the part of a W&B logger that run_evaluation uses
        def __init__(self) -> None:
            self.tables: dict[str, tuple] = {}

        def log_text(self, key: str, columns: list[str], data: list[list]) -> None:
            self.tables[key] = (columns, data)

    tiny_model.heads_loaded = True
    tiny_model.train()
    logger = TableLogger()
    options = EvaluationOptions(suite=str(suite_dir), modes=("dense", "sparse", "bm25"))
    results = run_evaluation(
        tiny_model, options, tmp_path / "out", model_ref="tiny", label="m", loggers=[logger, object()],
        log_prefix="baseline",
    )  # fmt: skip
    assert tiny_model.training
    assert set(logger.tables) == {"baseline/Toy-task/ndcg@10", "baseline/Toy-task/recall@20"}
    columns, rows = logger.tables["baseline/Toy-task/ndcg@10"]
    assert columns == ["method", "xx", "yy"]
    block = results["Toy-task"]["rows"]
    assert list(block) == ["BM25", "Dense", "Sparse"]
    assert rows == [
        [label, *(round(100 * block[label][lang]["ndcg@10"], 1) for lang in ("xx", "yy"))] for label in block
    ]
    assert read_results(tmp_path / "out")[0]["tasks"] == results
