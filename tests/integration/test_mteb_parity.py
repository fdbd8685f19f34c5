"""``python -m m3lit.mteb`` on a local BEIR folder scores every mode as ``python -m m3lit.evaluate`` does
(issue 32's parity: nDCG@10 and Recall@100 to 1e-4, fusion weights included)."""

from __future__ import annotations

import json

import pytest

from m3lit.evaluate import main as evaluate_main
from m3lit.mteb.command import main as mteb_main
from m3lit.mteb.tasks import task_name
from m3lit.retrieval.modes import MODEL_MODES

FAST = [
    "progress=false",
    "retrieval.batch_size=16",
    "retrieval.query_max_len=64",
    "retrieval.passage_max_len=64",
]
FUSION = ["retrieval.hybrid_weights=[1.0,0.7]", "retrieval.all_weights=[0.5,0.4,1.2]"]


def test_every_mode_equals_m3lit_evaluate(export_dir, tiny_beir_dir, tmp_path):
    """The parity of issue 32: nDCG@10 and Recall@100 of each mode, from mteb's own result files, equal
    ``python -m m3lit.evaluate`` on the same folder with the same settings (fusion weights included)."""
    expected = evaluate_main(
        [f"model={export_dir}", f"data={tiny_beir_dir}", f"output_dir={tmp_path / 'eval'}", *FAST, *FUSION]
    )
    out, task = tmp_path / "mteb", task_name(tiny_beir_dir)
    got = mteb_main(
        [f"model={export_dir}", f"data={tiny_beir_dir}", f"output_dir={out}", "name=tiny/m3", *FAST, *FUSION]
    )
    assert list(got) == [task] and list(got[task]) == list(MODEL_MODES)
    for mode in MODEL_MODES:
        files = list((out / "results" / f"tiny__m3__{mode.replace('+', '_')}").glob(f"*/{task}.json"))
        assert len(files) == 1, mode
        scores = json.loads(files[0].read_text())["scores"]["test"][0]
        for metric, key in (("ndcg@10", "ndcg_at_10"), ("recall@100", "recall_at_100")):
            assert scores[key] == pytest.approx(expected[mode][metric], abs=1e-4), (mode, metric)
            assert got[task][mode][metric] == scores[key]
    assert f"| {task} |" in (out / "results.md").read_text()
