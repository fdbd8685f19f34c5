"""Paper benchmarks from Hub datasets (m3lit.corpora.paper): built from local copies in the Hub's layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hub_fixtures import retrieval_configs, write_repo

from m3lit.corpora.paper import BENCHMARKS, build_paper_suite, paper_benchmark
from m3lit.corpora.paper.build import HubReadError
from m3lit.files.errors import PathError, UsageError
from m3lit.retrieval.beir import load_beir
from m3lit.retrieval.suite import read_suite


def _corpus(lang: str) -> list[dict]:
    return [{"_id": f"{i}#{j}", "title": f"{lang} title {i}", "text": f"{lang} passage {i} {j}"} for i in range(3) for j in range(2)]  # fmt: skip


def _split(lang: str, split: str, n: int) -> tuple[list[dict], list[dict]]:
    queries = [{"_id": f"{split}-{lang}-{q}", "text": f"{lang} {split} question {q}"} for q in range(n)]
    qrels = [
        {"query-id": f"{split}-{lang}-{q}", "corpus-id": f"{q % 3}#{q % 2}", "score": 1} for q in range(n)
    ]
    qrels.append({"query-id": f"{split}-{lang}-0", "corpus-id": "2#1", "score": 0})
    return queries, qrels


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory) -> Path:
    """Local copies of the MIRACL (dev only), MLDR (dev + test) and SciFact (test only) repositories."""
    root = tmp_path_factory.mktemp("hub")
    miracl = {}
    for lang in ("de", "en"):
        miracl.update(retrieval_configs(f"{lang}-", _corpus(lang), {"dev": _split(lang, "dev", 4)}))
    write_repo(root / BENCHMARKS["miracl"].repo, miracl)
    mldr = {}
    for lang in ("en", "fr"):
        splits = {"test": _split(lang, "test", 3), "dev": _split(lang, "dev", 2)}
        mldr.update(retrieval_configs(f"{lang}-", _corpus(lang), splits))
    write_repo(root / BENCHMARKS["mldr"].repo, mldr)
    write_repo(root / paper_benchmark("beir:scifact").repo, retrieval_configs("", _corpus("en"), {"test": _split("en", "test", 3)}))  # fmt: skip
    return root


def test_miracl_languages_become_beir_folders_of_the_reported_split(hub_dir):
    folder = build_paper_suite("miracl", ["en", "de"], hub_dir=hub_dir)
    suite = read_suite(folder)
    (task,) = suite.tasks
    assert task.name == "MIRACL" and task.metrics == ("ndcg@10", "recall@100")
    assert list(task.datasets) == ["en", "de"]
    assert task.dev_split is None  # MIRACL's only labelled split is the reported one: never tuned on
    for lang, path in task.datasets.items():
        data = load_beir(path, "test")
        corpus = _corpus(lang)
        assert data.corpus_ids == [row["_id"] for row in corpus]
        assert data.corpus_texts == [f"{row['title']} {row['text']}" for row in corpus]
        queries, qrels = _split(lang, "dev", 4)
        assert data.query_ids == [q["_id"] for q in queries]
        expected = [{} for _ in queries]
        for row in qrels:
            expected[int(row["query-id"].rsplit("-", 1)[1])][data.corpus_ids.index(row["corpus-id"])] = row[
                "score"
            ]
        assert data.qrels == expected
        assert not (Path(path) / "qrels" / "dev.tsv").exists()


def test_mldr_keeps_its_dev_split_for_tuning_and_long_passages(hub_dir):
    (task,) = read_suite(build_paper_suite("mldr", ["fr"], hub_dir=hub_dir)).tasks
    assert task.dev_split == "dev" and task.retrieval == {"query_max_len": 512, "passage_max_len": 8192}
    folder = task.datasets["fr"]
    test, dev = load_beir(folder, "test"), load_beir(folder, "dev")
    assert test.query_ids == [f"test-fr-{q}" for q in range(3)]
    assert dev.query_ids == [f"dev-fr-{q}" for q in range(2)]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["revision"] == BENCHMARKS["mldr"].revision
    assert manifest["sizes"] == {"corpus": 6, "test_queries": 3, "dev_queries": 2}


def test_a_beir_set_without_dev_qrels_is_not_tuned_on_its_test_split(hub_dir):
    (task,) = read_suite(build_paper_suite("beir:scifact", hub_dir=hub_dir)).tasks
    assert task.name == "BEIR scifact" and list(task.datasets) == ["en"]
    assert task.dev_split is None
    assert not (task.datasets["en"] / "qrels" / "dev.tsv").exists()


def test_a_built_language_is_reused_and_a_forced_build_is_identical(hub_dir):
    folder = build_paper_suite("miracl", ["de"], hub_dir=hub_dir)
    language = read_suite(folder).tasks[0].datasets["de"]
    before = (language / "manifest.json").read_text()
    stamp = (language / "corpus.jsonl").stat().st_mtime_ns
    build_paper_suite("miracl", ["de"], hub_dir=hub_dir)
    assert (language / "corpus.jsonl").stat().st_mtime_ns == stamp
    build_paper_suite("miracl", ["de"], hub_dir=hub_dir, force=True)
    assert (language / "manifest.json").read_text() == before


@pytest.mark.parametrize(
    ("name", "languages", "message"),
    [
        ("miracle", None, "suite=unknown benchmark 'miracle'; known: miracl, mldr, mkqa, beir:arguana"),
        ("miracl", ["en", "xx"], "languages: 'xx' not in miracl; its languages: ar, bn, de"),
        ("beir:scifact", ["en"], "languages: beir:scifact has one language (English); drop languages="),
    ],
)
def test_bad_names_are_usage_errors(hub_dir, name, languages, message):
    with pytest.raises(UsageError) as error:
        build_paper_suite(name, languages, hub_dir=hub_dir)
    assert str(error.value).startswith(message)


def test_a_missing_local_copy_names_the_expected_folder(tmp_path):
    with pytest.raises(PathError, match=r"hub_dir.*no local copy of mteb/MultiLongDocRetrieval"):
        build_paper_suite("mldr", ["en"], hub_dir=tmp_path)


def test_offline_without_a_copy_is_one_line_naming_the_dataset(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(HubReadError) as error:
        build_paper_suite("beir:nfcorpus")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("suite=beir:nfcorpus: cannot read mteb/nfcorpus@ec0fa4fe99da")
    assert message.endswith("(offline, pass hub_dir=DIR with a local copy at DIR/mteb/nfcorpus)")


NQ = [{"_id": f"doc{i}", "title": t, "text": x} for i, (t, x) in enumerate([
    ("Eiffel Tower", "The tower stands in Paris."),
    ("Everest", "Everest is 8,849 metres high."),
    ("Nile", "The Nile flows into the Mediterranean."),
])]  # fmt: skip
MKQA_QUESTIONS = {
    "de": [
        {"id": "1", "question": "Wo steht der Eiffelturm?", "answers": ["Paris"]},
        {"id": "2", "question": "Wie hoch ist der Everest?", "answers": ["8,849 metres", "8849 m"]},
        {"id": "3", "question": "Wer schrieb das Buch?", "answers": []},  # unanswerable
    ],
    "ja": [{"id": "1", "question": "エッフェル塔はどこ？", "answers": ["Paris"]}],
}


def test_mkqa_links_one_nq_corpus_into_every_language_and_keeps_answers(tmp_path):
    from hub_fixtures import write_mkqa_copy

    hub = write_mkqa_copy(tmp_path / "hub", NQ, MKQA_QUESTIONS)
    (task,) = read_suite(build_paper_suite("mkqa", ["de", "ja"], hub_dir=hub)).tasks
    assert (
        task.name == "MKQA" and task.metrics == ("qa_recall@100", "qa_recall@20") and task.dev_split is None
    )
    de, ja = (load_beir(task.datasets[lang]) for lang in ("de", "ja"))
    assert de.corpus_ids == ja.corpus_ids == ["doc0", "doc1", "doc2"]
    assert de.corpus_texts[1] == "Everest Everest is 8,849 metres high."
    assert (task.datasets["de"] / "corpus.jsonl").samefile(task.datasets["ja"] / "corpus.jsonl")
    assert de.query_ids == ["1", "2"] and de.answers == [["Paris"], ["8,849 metres", "8849 m"]]
    assert ja.query_texts == ["エッフェル塔はどこ？"]
    manifest = json.loads((task.datasets["de"] / "manifest.json").read_text())
    assert manifest["left_out"] == {"unanswerable": 1} and manifest["sizes"]["test_queries"] == 2
