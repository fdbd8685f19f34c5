"""``python -m m3lit.evaluate suite=mldr languages=[...]``: a paper benchmark built from a local copy of its
Hub repository, evaluated with tune_fusion, equals evaluating the built folder directly."""

from __future__ import annotations

import json

from hub_fixtures import retrieval_configs, write_repo

from m3lit.corpora.paper import BENCHMARKS
from m3lit.evaluate import main
from m3lit.retrieval.report.tables import MODE_NAMES

DOCS = [
    "the river flows north past the old mill",
    "bread is baked before dawn in the village",
    "a lighthouse guards the rocky northern coast",
    "the orchard gives apples and pears in autumn",
    "snow closes the mountain pass every winter",
    "the market sells fish, salt and rope",
]


def _mldr_copy(root):
    corpus = [{"_id": f"doc-en-{i}", "text": text} for i, text in enumerate(DOCS)]

    def split(name, rows):
        queries = [{"_id": f"q-{name}-{i}", "text": DOCS[d].split(" ", 2)[2]} for i, d in enumerate(rows)]
        qrels = [
            {"query-id": f"q-{name}-{i}", "corpus-id": f"doc-en-{d}", "score": 1} for i, d in enumerate(rows)
        ]
        return queries, qrels

    configs = retrieval_configs(
        "en-", corpus, {"test": split("test", [0, 2, 4, 5]), "dev": split("dev", [1, 3])}
    )
    return write_repo(root / BENCHMARKS["mldr"].repo, configs)


def test_suite_mldr_equals_the_built_folder_evaluated_directly(export_dir, tmp_path):
    _mldr_copy(tmp_path / "hub")
    common = [f"model={export_dir}", "device=cpu", "progress=false"]
    main([*common, "suite=mldr", "languages=[en]", f"hub_dir={tmp_path / 'hub'}", "tune_fusion=true",
          f"output_dir={tmp_path / 'suite'}"])  # fmt: skip
    recorded = json.loads((tmp_path / "suite" / "results.json").read_text())
    task = recorded["results"]["tasks"]["MLDR"]
    assert task["languages"] == ["en"] and task["metrics"] == ["ndcg@10"]
    fusion = task["fusion"]
    built = recorded["settings"]["suite"].rsplit("/suites/", 1)[0] + "/en"
    lengths = ["retrieval.query_max_len=512", "retrieval.passage_max_len=8192"]
    weights = [f"retrieval.hybrid_weights={fusion['dense+sparse']['weights']}",
               f"retrieval.all_weights={fusion['all']['weights']}"]  # fmt: skip
    direct = main([*common, f"data={built}", *lengths, *weights, f"output_dir={tmp_path / 'direct'}"])
    for mode in ("dense", "sparse", "colbert", "dense+sparse", "all"):
        assert task["rows"][MODE_NAMES[mode]]["en"]["ndcg@10"] == direct[mode]["ndcg@10"], mode


def test_suite_mkqa_scores_answer_recall_as_the_built_folder_does(export_dir, tmp_path):
    from hub_fixtures import write_mkqa_copy

    corpus = [{"_id": f"doc{i}", "title": "", "text": text} for i, text in enumerate(DOCS)]
    questions = {"de": [{"id": str(i), "question": f"wo {DOCS[i].split()[1]}", "answers": [DOCS[i].split()[-1]]}
                        for i in range(len(DOCS))]}  # fmt: skip
    hub = write_mkqa_copy(tmp_path / "hub", corpus, questions)
    common = [f"model={export_dir}", "device=cpu", "progress=false", "modes=[dense,sparse,bm25]"]
    main([*common, "suite=mkqa", "languages=[de]", f"hub_dir={hub}", f"output_dir={tmp_path / 'suite'}"])
    recorded = json.loads((tmp_path / "suite" / "results.json").read_text())
    task = recorded["results"]["tasks"]["MKQA"]
    built = recorded["settings"]["suite"].rsplit("/suites/", 1)[0] + "/de"
    direct = main(
        [*common, f"data={built}", "metrics=[qa_recall@100,qa_recall@20]", f"output_dir={tmp_path / 'd'}"]
    )
    for mode in ("dense", "sparse", "bm25"):
        assert task["rows"][MODE_NAMES[mode]]["de"] == direct[mode], mode
    assert direct["bm25"]["qa_recall@100"] == 1.0  # every answer is in some passage, and 6 < 100
