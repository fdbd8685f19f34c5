"""m3lit inside mteb: ties keep m3lit's order under mteb's scorer, a local STS task runs on the dense
vectors, the metadata and protocols are mteb's, and bad input is one line (the parity of every mode with
``m3lit.evaluate``: tests/integration/test_mteb_parity.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.models_protocols import EncoderProtocol, SearchProtocol
from scipy.stats import spearmanr

from m3lit.inference.encoding import encode_texts
from m3lit.mteb.command import main as mteb_main
from m3lit.mteb.model import mteb_models, weights_revision
from m3lit.mteb.results import evaluate_tasks
from m3lit.mteb.search import as_run
from m3lit.retrieval.index.ranking import Ranking
from m3lit.retrieval.metrics import evaluate_ranking
from m3lit.retrieval.modes import MODEL_MODES


def test_ties_keep_m3lit_order_under_pytrec_eval():
    """pytrec_eval breaks score ties by document id (descending, in single precision); the run given to mteb
    keeps m3lit's order (index ascending), so mteb's nDCG equals m3lit's on a list made of ties."""
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores

    corpus_ids = ["d0", "d1", "d2", "d3", "d9"]
    scores = np.array([[0.5, 0.5, 0.5, 0.5, 0.25]], np.float32)  # d0..d3 tied; d3 relevant
    ranking = Ranking.from_scores(scores, k=5)
    qrels = [{3: 1}]
    expected = evaluate_ranking(ranking, qrels, ["ndcg@10"]).values["ndcg@10"]
    run = as_run(ranking, ["q"], corpus_ids)
    assert list(run["q"]) == ["d0", "d1", "d2", "d3", "d9"]
    got = calculate_retrieval_scores(run, {"q": {"d3": 1}}, [10])
    assert got.ndcg["NDCG@10"] == pytest.approx(expected, abs=1e-5)
    assert expected == pytest.approx(1 / np.log2(5))  # rank 4 by m3lit's order


class TinySTS(AbsTaskSTS):
    """A local STS task: four sentence pairs and gold similarities."""

    metadata = TaskMetadata(
        name="TinySTS",
        description="Four local sentence pairs.",
        dataset={"path": "local", "revision": "local"},
        type="STS",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="cosine_spearman",
        bibtex_citation="",
    )
    min_score, max_score = 0, 5
    pairs = [
        ("Return the absolute value of the argument.", "Absolute value of a number.", 4.5),
        ("Create a new dictionary.", "Return a list of the keys.", 1.0),
        ("Convert a string to an integer.", "Build an integer from a number or string.", 4.0),
        ("Print the values to a stream.", "Open a file and return a stream.", 2.0),
    ]

    def load_data(self, num_proc=None, **kwargs) -> None:
        columns = dict(
            zip(("sentence1", "sentence2", "score"), map(list, zip(*self.pairs, strict=True)), strict=True)
        )
        self.dataset = DatasetDict({"test": Dataset.from_dict(columns)})
        self.data_loaded = True


def test_sts_task_runs_on_the_dense_vectors(tiny_model, tmp_path):
    models = mteb_models(tiny_model, ["dense", "all"], {"passage_max_len": 64}, name="tiny/m3", device="cpu")
    results = evaluate_tasks(models, ["dense", "all"], [TinySTS()], tmp_path, progress=False)
    assert list(results) == ["TinySTS"] and list(results["TinySTS"]) == ["dense"]
    left, right, gold = zip(*TinySTS.pairs, strict=True)
    a = encode_texts(tiny_model, list(left), max_length=64).dense
    b = encode_texts(tiny_model, list(right), max_length=64).dense
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert results["TinySTS"]["dense"]["cosine_spearman"] == pytest.approx(
        spearmanr(cosine, gold)[0], abs=1e-5
    )


def test_model_meta_and_protocols(tiny_model):
    models = mteb_models(tiny_model, MODEL_MODES, name="org/tiny", languages=["eng-Latn"], device="cpu")
    assert list(models) == list(MODEL_MODES)
    meta = models["dense+sparse"].mteb_model_meta
    assert meta.name == "org/tiny__dense_sparse" and meta.revision == weights_revision(tiny_model)
    assert meta.embed_dim == tiny_model.hidden_size and meta.max_tokens == tiny_model.max_length
    assert meta.framework == ["PyTorch"] and meta.languages == ["eng-Latn"]
    assert meta.n_parameters == sum(p.numel() for p in tiny_model.parameters())
    model = models["all"]
    assert isinstance(model, EncoderProtocol) and isinstance(model, SearchProtocol)
    assert len({m.search_engine for m in models.values()}) == 1  # one index for every mode
    torch.manual_seed(1)
    assert weights_revision(tiny_model) == meta.revision  # the weights decide it, not the random state


def test_hub_task_offline_is_one_line(export_dir, tmp_path, command_error, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    code, line = command_error(mteb_main, [f"model={export_dir}", "tasks=[SciFact]", f"output_dir={out}"])
    assert code == 1
    assert line.startswith("error: tasks: SciFact needs its data from the Hugging Face Hub (mteb/scifact)")
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["modes=[dense,bm25]"], "error: modes=['dense', 'bm25']: choose one or more of"),
        (["tasks=[NoSuchTask]"], "error: tasks: "),
        (["colour=red"], "error: unknown option 'colour' (no similar option)"),
        (["retrieval.hybrid_k=-1"], "error: retrieval: "),
        ([], "error: nothing to evaluate"),
        (["data_language=english"], "error: data_language: Invalid language code: english"),
        (["tasks=[SciFact]", "task_languages=[fra]"], "error: tasks=['SciFact']: none has a subset in"),
    ],
)
def test_bad_options_exit_2(export_dir, tiny_beir_dir, tmp_path, command_error, args, start):
    data = [] if not args or args[0].startswith("tasks") else [f"data={tiny_beir_dir}"]
    code, line = command_error(
        mteb_main, [f"model={export_dir}", f"output_dir={tmp_path / 'o'}", *data, *args]
    )
    assert code == 2 and line.startswith(start), line
    assert not (tmp_path / "o").exists()


def test_missing_folder_exit_1(export_dir, tmp_path, command_error):
    code, line = command_error(mteb_main, [f"model={export_dir}", f"data={tmp_path / 'nope'}"])
    assert code == 1 and "nope" in line


def test_reranking_task_reranks_its_candidates_by_the_dense_vectors(tiny_model, tmp_path):
    """A reranking task (a retrieval task with candidate lists) runs once, dense: each query's candidates in
    order of the cosine of the dense vectors (documents as mteb joins them: title + " " + text)."""
    from mteb.mocks.mock_tasks.reranking import MockRerankingTask

    task = MockRerankingTask()
    task.load_data()
    split = task.dataset["default"]["test"]
    models = mteb_models(tiny_model, ["dense", "all"], name="tiny/m3", device="cpu")
    results = evaluate_tasks(models, ["dense", "all"], [task], tmp_path, progress=False)
    assert list(results["MockRerankingTask"]) == ["dense"]
    docs = {row["id"]: f"{row['title']} {row['text']}".strip() for row in split["corpus"]}
    ndcgs = []
    for row in split["queries"]:
        candidates = list(split["top_ranked"][row["id"]])
        q = encode_texts(tiny_model, [row["text"]]).dense[0]
        d = encode_texts(tiny_model, [docs[c] for c in candidates]).dense
        ranked = [candidates[i] for i in np.argsort(-(d @ q), kind="stable")]
        rank = 1 + min(
            ranked.index(doc) for doc, grade in split["relevant_docs"][row["id"]].items() if grade > 0
        )
        ndcgs.append(1 / np.log2(rank + 1))
    assert results["MockRerankingTask"]["dense"]["ndcg@10"] == pytest.approx(np.mean(ndcgs), abs=1e-5)
