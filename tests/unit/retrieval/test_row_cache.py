"""The row cache (m3lit.retrieval.row_cache): the reference model's and BM25's rows computed once, keyed by
the model's content, the data and every setting; a reused row equals a recomputed one."""

from __future__ import annotations

import copy
import json
import logging
import shutil

import pytest
import torch

from m3lit.files.cache import cache_root
from m3lit.retrieval import evaluate_retrieval
from m3lit.retrieval.options import EvaluationOptions
from m3lit.retrieval.row_cache import ROWS_DIR, cached_rows, model_fingerprint
from m3lit.retrieval.suite import SuiteSystem, evaluate_suite, load_suite

METRICS = ["ndcg@10", "recall@20"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A cache per test: each test sees only the entries it made."""
    monkeypatch.setenv("M3LIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def suite_dir(tmp_path, tiny_beir_dir):
    for lang in ("xx", "yy"):
        shutil.copytree(tiny_beir_dir, tmp_path / "task" / lang)
    queries = tmp_path / "task" / "yy" / "queries.jsonl"  # other queries: other data, other cache entries
    queries.write_text(
        queries.read_text(encoding="utf-8").replace('"text": "', '"text": "the '), encoding="utf-8"
    )
    spec = {
        "name": "toy",
        "tasks": [
            {
                "name": "Toy",
                "metrics": METRICS,
                "datasets": {"xx": "task/xx", "yy": "task/yy"},
                "retrieval": {"passage_max_len": 64},
            }
        ],
    }
    (tmp_path / "suite.json").write_text(json.dumps(spec), encoding="utf-8")
    return tmp_path


def _suite(suite_dir, model, reference, runs, retrieval=None):
    """One suite evaluation: ``model`` in dense + sparse, ``reference`` (cached rows) in dense, BM25."""
    main = SuiteSystem("", model, ("dense", "sparse"))
    released = SuiteSystem(
        "released", reference, ("dense",), retrieval or {"query_max_len": 8}, cache_rows=True
    )
    options = EvaluationOptions(modes=("dense", "sparse", "bm25"))
    return evaluate_suite([main, released], load_suite(suite_dir), options, runs_dir=runs)["Toy"]["rows"]


def _entries() -> int:
    folder = cache_root() / ROWS_DIR
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def test_reused_rows_equal_recomputed_ones_and_say_so(suite_dir, tiny_model, tmp_path, caplog):
    tiny_model.heads_loaded = True
    reference = copy.deepcopy(tiny_model)
    with caplog.at_level(logging.INFO, logger="m3lit.retrieval.row_cache"):
        first = _suite(suite_dir, tiny_model, reference, tmp_path / "a")
        assert caplog.text.count("rows computed and cached") == 4  # BM25 and the reference, 2 languages
        assert "rows reused" not in caplog.text
        caplog.clear()
        second = _suite(suite_dir, tiny_model, copy.deepcopy(reference), tmp_path / "b")
        assert caplog.text.count("rows reused from the cache entry") == 4
        assert "rows computed" not in caplog.text
    assert _entries() == 4
    assert second == first  # every value to the last digit
    for lang in ("xx", "yy"):  # and both equal a direct evaluation
        direct = evaluate_retrieval(
            reference, suite_dir / "task" / lang, modes=["dense", "bm25"], metrics=METRICS,
            config={"passage_max_len": 64, "query_max_len": 8},
        )  # fmt: skip
        assert second["released (Dense)"][lang] == direct["dense"]
        assert second["BM25"][lang] == direct["bm25"]
    for name in ("xx/released/dense.trec", "xx/model/bm25.trec", "yy/released/dense.trec"):
        assert (tmp_path / "b" / "Toy" / name).read_bytes() == (tmp_path / "a" / "Toy" / name).read_bytes()


@pytest.mark.parametrize(
    "retrieval",
    [
        {"query_max_len": 6},
        {"query_max_len": 8, "query_prefix": "query: "},
        {"query_max_len": 8, "passage_max_len": 32},
    ],
)
def test_a_changed_setting_recomputes_the_reference_rows(suite_dir, tiny_model, tmp_path, caplog, retrieval):
    tiny_model.heads_loaded = True
    reference = copy.deepcopy(tiny_model)
    _suite(suite_dir, tiny_model, reference, tmp_path / "a")
    with caplog.at_level(logging.INFO, logger="m3lit.retrieval.row_cache"):
        rows = _suite(suite_dir, tiny_model, reference, tmp_path / "b", retrieval)
    assert caplog.text.count("rows reused") == 2  # BM25's settings did not change
    assert caplog.text.count("rows computed") == 2  # the reference's did, in both languages
    direct = evaluate_retrieval(
        reference, suite_dir / "task" / "xx", modes=["dense"], metrics=METRICS,
        config={"passage_max_len": 64, **retrieval},
    )  # fmt: skip
    assert rows["released (Dense)"]["xx"] == direct["dense"]


def test_a_changed_weight_recomputes_and_a_copied_model_does_not(suite_dir, tiny_model, tmp_path, caplog):
    tiny_model.heads_loaded = True
    reference = copy.deepcopy(tiny_model)
    assert model_fingerprint(copy.deepcopy(reference)) == model_fingerprint(reference)
    _suite(suite_dir, tiny_model, reference, tmp_path / "a")
    with torch.no_grad():
        reference.encoder.embeddings.word_embeddings.weight[5, 0] += 1e-3
    changed = model_fingerprint(reference)
    assert changed != model_fingerprint(tiny_model)
    with caplog.at_level(logging.INFO, logger="m3lit.retrieval.row_cache"):
        _suite(suite_dir, tiny_model, reference, tmp_path / "b")
    assert caplog.text.count("rows computed") == 2 and caplog.text.count("rows reused") == 2


def test_cached_rows_compute_once_per_key(tmp_path):
    calls = []

    def compute(runs_dir):
        calls.append(runs_dir)
        runs_dir.mkdir(parents=True)
        (runs_dir / "dense.trec").write_text("q 0 d 1 0.5 dense\n")
        return {"dense": {"ndcg@10": 1 / 3}}

    first = cached_rows("toy", {"k": 1}, compute, tmp_path / "a")
    again = cached_rows("toy", {"k": 1}, compute, tmp_path / "b")
    assert len(calls) == 1 and again == first == {"dense": {"ndcg@10": 1 / 3}}  # a float read back exactly
    assert (tmp_path / "b" / "dense.trec").read_text() == "q 0 d 1 0.5 dense\n"
    cached_rows("toy", {"k": 2}, compute, None)
    assert len(calls) == 2


def test_the_linear_layers_backend_is_part_of_the_key(tmp_path, monkeypatch):
    """oneDNN and torch's BLAS round the encoder's sums differently: rows of one are not reused for the other."""
    calls = []

    def compute(runs_dir):
        calls.append(runs_dir)
        return {"dense": {"ndcg@10": 0.5}}

    key = {"test": "linear backend"}  # no other test's key (the cache folder is the session's)
    cached_rows("toy", key, compute, None)
    monkeypatch.setenv("M3LIT_ONEDNN_LINEAR", "0")
    cached_rows("toy", key, compute, None)
    cached_rows("toy", key, compute, None)
    assert len(calls) == 2


def test_fresh_heads_leave_a_dense_only_reference_key_unchanged(suite_dir, tiny_model, tmp_path, caplog):
    """A released encoder without head files gets new random heads at every load: its dense rows are reused."""
    tiny_model.heads_loaded = True
    reference = copy.deepcopy(tiny_model)
    _suite(suite_dir, tiny_model, reference, tmp_path / "a")
    before = model_fingerprint(reference)
    with torch.no_grad():
        reference.sparse_head.linear.weight.normal_()
        reference.colbert_head.linear.weight.normal_()
    assert model_fingerprint(reference) != before
    assert model_fingerprint(reference, heads=False) == model_fingerprint(tiny_model, heads=False)
    with caplog.at_level(logging.INFO, logger="m3lit.retrieval.row_cache"):
        _suite(suite_dir, tiny_model, reference, tmp_path / "b")
    assert caplog.text.count("rows reused") == 4 and "rows computed" not in caplog.text
