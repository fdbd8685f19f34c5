"""The export's model card (README.md): Hub metadata read back by huggingface_hub, the recipe, push_to_hub."""

from __future__ import annotations

import json

import lightning as L
import pytest
import yaml
from huggingface_hub import ModelCard, metadata_load
from train_utils import fit_three_steps

from m3lit.export import export, main
from m3lit.export_card import base_model_facts
from m3lit.model import M3Model
from m3lit.model.reference import hub_offline
from m3lit.model.tiny import tiny_xlmr_config
from m3lit.retrieval.pipeline import evaluate_retrieval
from m3lit.retrieval.report.write import write_reports

METRICS = ("ndcg@10", "recall@20")


@pytest.fixture(scope="module")
def run_dir(tokenizer, tiny_beir_dir, tmp_path_factory):
    """A run folder: checkpoints/last.ckpt, config.yaml, results.json of its evaluation, train.log."""
    L.seed_everything(0)
    root = tmp_path_factory.mktemp("card")
    run, base = root / "run", root / "base"
    base.mkdir()
    (base / "README.md").write_text(
        "---\nlicense: Apache-2.0\nlanguage: [en, de]\nbase_model: org/base\n---\n"
    )
    (root / "pairs.jsonl").write_text('{"query": "q", "pos": ["p"]}\n' * 5)
    (root / "labelled.jsonl").write_text('{"query": "q", "pos": ["p"], "neg": ["n"]}\n' * 7)
    net = M3Model.from_config(tiny_xlmr_config(len(tokenizer), max_length=128), tokenizer, colbert_dim=16)
    (run / "checkpoints").mkdir(parents=True)
    fit_three_steps(net, tokenizer, run / "checkpoints")
    config = {
        "task_name": "tiny_card", "seed": 7,
        "model": {"net": {"name_or_path": str(base)}, "stage": "unified", "loss": {"temperature": 0.02}},
        "callbacks": {"stage_switch": {"schedule": {0: {"stage": "dense", "source": "pairs"}, 2: "unified"}}},
        "data": {"pairs_data": str(root / "pairs.jsonl"), "train_data": [str(root / "labelled.jsonl")]},
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 3, "precision": "32-true"},
    }  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    results = evaluate_retrieval(
        net.eval(), tiny_beir_dir, metrics=METRICS, modes=("dense", "sparse", "all", "bm25")
    )
    write_reports(results, run, {"data": str(tiny_beir_dir), "split": "test"})
    (run / "train.log").write_text(f"[x][m3lit.train][INFO] - run folder: {run} (12.5 s)\n")
    return run


def test_card_metadata_and_model_index_match_results(run_dir, tmp_path):
    out = export(run_dir / "checkpoints" / "last.ckpt", tmp_path / "export")
    assert "README.md" in out.files
    meta = metadata_load(tmp_path / "export" / "README.md")
    assert meta["license"] == "apache-2.0" and meta["language"] == ["en", "de"]
    assert meta["base_model"] == "org/base" and meta["library_name"] == "sentence-transformers"
    assert meta["pipeline_tag"] == "sentence-similarity" and "m3lit" in meta["tags"]
    want = json.loads((run_dir / "results.json").read_text())["results"]
    names = {"dense": "Dense", "sparse": "Sparse", "all": "All"}
    expected = {
        (f"{names[m]} {metric}", v) for m, row in want.items() if m != "bm25" for metric, v in row.items()
    }
    (index,) = meta["model-index"]
    assert index["name"] == "tiny_card"
    (entry,) = index["results"]
    assert entry["dataset"]["name"] == "tiny" and entry["dataset"]["split"] == "test"
    got = set()
    for m in entry["metrics"]:
        label, metric = m["name"].rsplit(" ", 1)
        raw = metric.replace("nDCG", "ndcg").replace("Recall", "recall")
        assert m["type"] == raw.replace("@", "_at_")
        got.add((f"{label} {raw}", m["value"]))
    assert got == expected  # every row of the model, no BM25 row, values exactly as results.json
    card = ModelCard.load(tmp_path / "export" / "README.md")
    assert len(card.data.eval_results) == len(expected)
    text = card.text
    assert "| 0 | dense | dense | False | pairs |" in text
    assert "| 2 | unified | dense, sparse, colbert | False | - |" in text
    assert "pairs.jsonl`: 5" in text and "labelled.jsonl`: 7" in text
    assert "Wall time: 12.5 s" in text and "Steps: 3" in text and "| Dense |" in text
    for snippet in ("BGEM3FlagModel(", "SentenceTransformer(", "M3Embedder("):
        assert snippet in text and str(tmp_path / "export") in text


def test_card_without_run_folder_has_no_model_index(export_dir, tmp_path):
    export(export_dir, tmp_path / "re")  # a re-export of a folder: no run, no evaluation
    meta = metadata_load(tmp_path / "re" / "README.md")
    assert "model-index" not in meta and meta["library_name"] == "sentence-transformers"
    assert "No training run recorded" in (tmp_path / "re" / "README.md").read_text()


def test_base_model_facts_from_an_m3lit_source_manifest(tmp_path):
    (tmp_path / "m3lit_source.json").write_text(json.dumps({"model": "org/orig", "model_license": "MIT"}))
    assert base_model_facts(str(tmp_path)) == {"base_model": "org/orig", "license": "mit"}
    assert base_model_facts("BAAI/bge-m3") == {"base_model": "BAAI/bge-m3"}
    assert base_model_facts(str(tmp_path / "absent")) == {}


def test_push_offline_stops_before_anything(run_dir, tmp_path, monkeypatch, command_error):
    import huggingface_hub

    calls = []
    for name in ("create_repo", "upload_folder"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, lambda *a, _n=name, **k: calls.append(_n))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_offline.cache_clear()
    out = tmp_path / "pushed"
    argv = [f"model={run_dir / 'checkpoints' / 'last.ckpt'}", f"output_dir={out}", "push_to_hub=me/tiny-m3"]
    try:
        code, line = command_error(main, argv)
    finally:
        hub_offline.cache_clear()
    assert code == 1
    reason = "the Hugging Face Hub is offline (HF_HUB_OFFLINE is set); nothing was uploaded"
    assert line == f"error: push_to_hub=me/tiny-m3: {reason}"
    assert not out.exists() and calls == []
    assert command_error(main, [*argv[:2], "push_to_hub=not a repo"])[0] == 2
