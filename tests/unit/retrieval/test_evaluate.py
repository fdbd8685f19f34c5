"""``python -m m3lit.evaluate`` and ``write_reports``: the three files, their contents, several datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib.image
import pytest
import torch

from m3lit.config.checks import ConfigError
from m3lit.evaluate import load_config, main, write_reports
from m3lit.retrieval.report.provenance import read_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST = [
    "progress=false",
    "retrieval.batch_size=16",
    "retrieval.query_max_len=64",
    "retrieval.passage_max_len=64",
]
METRICS = {"ndcg@10", "recall@100", "mrr@10"}


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_several_datasets_nest_by_name_and_average(export_dir, tiny_beir_dir, tmp_path):
    other = tmp_path / "second"
    shutil.copytree(tiny_beir_dir, other)
    (other / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td5\t1\nq2\td9\t2\n")
    out = tmp_path / "out"
    results = main(
        [
            f"model={export_dir}",
            f"data=[{tiny_beir_dir},{other}]",
            f"output_dir={out}",
            "modes=[dense,bm25]",
            *FAST,
        ]
    )
    saved, settings = read_results(out / "results.json")
    assert saved == results and settings["data"] == [str(tiny_beir_dir), str(other)]
    assert set(settings["datasets"]) == {"tiny", "second"}
    assert (
        (out / "runs" / "second" / "dense.trec").is_file()
        and (out / "runs" / "tiny" / "bm25.trec").is_file()
        and list(saved) == ["tiny", "second"]
    )
    assert set(saved["tiny"]) == {"dense", "bm25"} and set(saved["second"]["dense"]) == METRICS
    table = (out / "results.md").read_text()
    avg = (saved["tiny"]["dense"]["ndcg@10"] + saved["second"]["dense"]["ndcg@10"]) / 2
    assert "### nDCG@10 (x100)" in table and f"| **Average** | {100 * avg:.1f} |" in table
    assert_png(out / "results.png")


def test_model_without_heads_reports_dense_and_bm25_only(export_dir, tiny_beir_dir, tmp_path):
    partial = tmp_path / "no_heads"
    shutil.copytree(export_dir, partial)
    (partial / "sparse_linear.pt").unlink()
    out = tmp_path / "out"
    results = main([f"model={partial}", f"data={tiny_beir_dir}", f"output_dir={out}", *FAST])
    assert list(results) == ["dense", "bm25"]
    table = (out / "results.md").read_text()
    assert "| Sparse |" not in table and "| Multi-vec |" not in table and "| All |" not in table


def test_training_checkpoint_is_loaded_safely(tiny_config, tokenizer, tiny_beir_dir, tmp_path):
    from m3lit.model import M3Model
    from m3lit.model.training_checkpoint import CKPT_META_KEY, checkpoint_metadata

    torch.manual_seed(1)
    model = M3Model.from_config(tiny_config, tokenizer, colbert_dim=16)
    ckpt = tmp_path / "last.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save(
        {
            "state_dict": state,
            "global_step": 3,
            "hyper_parameters": {},
            CKPT_META_KEY: checkpoint_metadata(model),
        },
        ckpt,
    )
    export = tmp_path / "export"
    model.save_pretrained(export)
    from_ckpt = main(
        [f"model={ckpt}", f"data={tiny_beir_dir}", f"output_dir={tmp_path / 'a'}", "modes=[dense,all]", *FAST]
    )
    from_export = main(
        [
            f"model={export}",
            f"data={tiny_beir_dir}",
            f"output_dir={tmp_path / 'b'}",
            "modes=[dense,all]",
            *FAST,
        ]
    )
    assert from_ckpt == from_export


def test_config_errors_are_clear(command_error):
    with pytest.raises(ConfigError, match="retrieval.hybrid_wieghts"):
        load_config(["model=x", "data=y", "retrieval.hybrid_wieghts=[1,1]"])
    with pytest.raises(ConfigError, match="is not key=value"):
        load_config(["model"])
    status, line = command_error(main, ["model=x"])
    assert status == 2 and line == "error: missing required option(s): data=... (or suite=...) (see --help)"


def test_write_reports_single_dataset_table(tmp_path):
    results = {"dense": {"ndcg@10": 0.5, "mrr@10": 0.25}, "bm25": {"ndcg@10": 0.125, "mrr@10": 1.0}}
    table = write_reports(results, tmp_path)
    assert table == (
        "Scores x100.\n\n| Mode | nDCG@10 | MRR@10 |\n|---|---:|---:|\n| Dense | 50.0 | 25.0 |\n| BM25 | 12.5 | 100.0 |\n"
    )
    assert json.loads((tmp_path / "results.json").read_text()) == {"settings": None, "results": results}
    assert (tmp_path / "results.md").read_text() == table
    assert_png(tmp_path / "results.png")


def test_write_reports_several_datasets_with_a_missing_mode(tmp_path):
    results = {
        "a": {"dense": {"ndcg@10": 0.2}, "sparse": {"ndcg@10": 0.4}},
        "b": {"dense": {"ndcg@10": 0.6}},  # evaluated dense-only: no Sparse value, no Sparse average
    }
    table = write_reports(results, tmp_path)
    assert "| a | 20.0 | 40.0 |" in table and "| b | 60.0 | - |" in table
    assert "| **Average** | 40.0 | - |" in table
    assert_png(tmp_path / "results.png")
