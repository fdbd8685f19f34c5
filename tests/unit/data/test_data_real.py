"""FlagEmbedding's own example training files (../shared/data/flagembedding-example-data) load and train."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from m3lit.data.datamodule import M3DataModule

#: ../shared beside the repository; $M3LIT_SHARED names another (e.g. from a git worktree elsewhere).
SHARED = Path(os.environ.get("M3LIT_SHARED") or Path(__file__).resolve().parents[3].parent / "shared")
ROOT = SHARED / "data" / "flagembedding-example-data"
FOLDERS = ["retrieval", "sts", "classification-no_in_batch_neg", "clustering-no_in_batch_neg"]
pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(
        not ROOT.is_dir(), reason=f"FlagEmbedding example data not found at {ROOT} (../shared absent)"
    ),
]
#: name -> (G, no_in_batch_neg, teacher scores) as spec 4.2/4.3 derive them from type, folder and fields.
EXPECTED = {
    "retrieval/msmarco.jsonl": (8, False, True),
    "retrieval/nli.jsonl": (2, False, True),  # only_1neg
    "retrieval/nq.jsonl": (8, False, True),
    "sts/sts.jsonl": (8, False, False),
    "classification-no_in_batch_neg/AmazonClassification.jsonl": (
        5,
        True,
        False,
    ),  # symmetric_class: 1 + 4 negatives
    "classification-no_in_batch_neg/Banking77Classification.jsonl": (8, True, False),
    "clustering-no_in_batch_neg/arXiv_title.jsonl": (8, True, False),
    "clustering-no_in_batch_neg/bioRXiv_title.jsonl": (8, True, False),
}


def _module(tokenizer, tmp_path, **kw) -> M3DataModule:
    options = {
        "train_data": [str(ROOT / f) for f in FOLDERS],
        "tokenizer": tokenizer,
        "query_max_len": 32,
        "passage_max_len": 64,
        "bucket_edges": [],
        "bucket_batch_sizes": [4],
        "use_prompt": True,
        "cache_dir": str(tmp_path / "lengths"),
        "seed": 0,
    }
    options.update(kw)
    return M3DataModule.from_config(**options)


def _lines(name: str) -> list[dict]:
    with open(ROOT / name, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_every_example_file_loads_with_the_reference_semantics(tokenizer, tmp_path):
    dm = _module(tokenizer, tmp_path)
    dm.setup("fit")
    datasets = {ds.name: ds for ds in dm.sources["labelled"].datasets}
    assert set(datasets) == set(EXPECTED) and dm.skip_report.total == 0
    for name, (group, flag, scores) in EXPECTED.items():
        ds = datasets[name]
        assert (ds.group_size, ds.no_in_batch_neg, ds.has_scores) == (group, flag, scores), name
        assert len(ds) == len(_lines(name)) == 10
    seen = set()
    for batch in dm.iter_batches():
        seen.add(batch.dataset)
        group, flag, scores = EXPECTED[batch.dataset]
        assert batch.group_size == group and batch.no_in_batch_neg == flag
        assert batch.num_passages == batch.num_queries * group
        lines = _lines(batch.dataset)
        halved = "symmetric" in (lines[0].get("type") or "")
        assert batch.num_queries == (2 if halved else 4)  # symmetric types halve the batch (spec 4.3)
        queries = [
            tokenizer.decode(row, skip_special_tokens=True) for sub in batch.queries for row in sub.input_ids
        ]
        for row, index in enumerate(batch.meta["indices"]):
            line = lines[index]
            prompt = tokenizer.decode(tokenizer(line["prompt"], add_special_tokens=False)["input_ids"])
            assert queries[row].startswith(prompt[:10])  # use_prompt: the line's prompt leads the query
            if scores:
                assert batch.teacher_scores[row, 0].item() == pytest.approx(line["pos_scores"][0])
                negs = batch.teacher_scores[row, 1:].tolist()
                assert negs == sorted(negs, reverse=True)  # sorted by teacher score, as the paper code
                assert all(any(abs(n - x) < 1e-3 for x in line["neg_scores"]) for n in negs)
            else:
                assert batch.teacher_scores is None
    assert seen == set(EXPECTED)  # every file contributes batches
