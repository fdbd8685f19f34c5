"""FlagEmbedding's own example training files (../shared/data/flagembedding-example-data) load and train."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch

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


@pytest.mark.slow
def test_the_example_files_train_a_few_steps(tokenizer, tmp_path, tiny_config):
    lit_module = pytest.importorskip("m3lit.training.lit_module", reason="training module not available")
    from m3lit.model import M3Model

    torch.manual_seed(0)
    net = M3Model.from_config(tiny_config, tokenizer, colbert_dim=16)
    module = lit_module.M3LitModule(net, stage="unified_self_distill", optimizer={"lr": 1e-3})
    # one step per file: each file's 10 lines form one kept tail batch (drop_last=False)
    dm = _module(tokenizer, tmp_path, bucket_batch_sizes=[20], drop_last=False, passage_max_len=32)
    dm.setup("fit")
    steps = len(dm.sources["labelled"].sampler)
    assert steps == len(EXPECTED)

    class Record(L.Callback):
        def __init__(self) -> None:
            self.rows: list[tuple[str, float]] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.rows.append((batch.dataset, float(loss)))

    record = Record()
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, use_distributed_sampler=False,
        callbacks=[record], default_root_dir=str(tmp_path), num_sanity_val_steps=0,
    )  # fmt: skip
    before = [p.detach().clone() for p in net.parameters()]
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == steps == len(record.rows)
    assert {name for name, _ in record.rows} == set(EXPECTED)  # one epoch visits every file
    assert all(torch.isfinite(torch.tensor(loss)) and loss > 0 for _, loss in record.rows)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, net.parameters(), strict=True))
