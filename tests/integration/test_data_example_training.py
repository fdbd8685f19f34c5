"""FlagEmbedding's example training files (../shared/data/flagembedding-example-data) train, and a merged run
killed mid-way resumes exactly. Loading and merging them: tests/unit/data/test_data_real.py and test_merge.py.
"""

from __future__ import annotations

import logging

import lightning as L
import pytest
import test_data_real
import torch
from test_data_real import EXPECTED, _module
from test_merge import REAL_MERGE, _real_data

pytestmark = test_data_real.pytestmark  # shared_data: skipped with a reason when ../shared is absent


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


@pytest.mark.shared_data
def test_merged_example_data_resume_is_exact(tokenizer, tmp_path, caplog):
    """A real Trainer run on the merged example folders, killed at step 5 and resumed from its step-4
    checkpoint, ends with the weights of the uninterrupted run, bit for bit."""
    import torch
    from test_resume import _weights
    from train_utils import tiny_corpus, tiny_run_overrides

    from m3lit.config.compose import compose
    from m3lit.model.training_checkpoint import safe_torch_load
    from m3lit.train import train

    real = _real_data()
    corpus = tiny_corpus(tmp_path / "corpus", tokenizer)  # its tokenizer and eval folder; data replaced
    run = (
        f"data.train_data=[{','.join(str(real.ROOT / f) for f in real.FOLDERS)}]",
        f"data.small_threshold={REAL_MERGE['small_threshold']}",
        f"data.drop_threshold={REAL_MERGE['drop_threshold']}",
        "trainer.max_steps=8",
        "trainer.deterministic=true",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "callbacks.stage_switch.schedule={0:{stage:unified_self_distill,source:labelled}}",
        "model.net.init.dropout=0.1",
    )
    with caplog.at_level(logging.INFO, logger="m3lit.data"):
        _, full = train(compose(tiny_run_overrides(corpus, tmp_path / "full", *run)))
    assert full["trainer"].global_step == 8
    # reported at start-up; data.train_group_size=3 (tiny run) gives both classification files G=3, so
    # they merge too, and only nli (G=2) and sts (alone) are dropped
    for folder in ("retrieval", "classification-no_in_batch_neg", "clustering-no_in_batch_neg"):
        assert f"into {folder}/merged(2 files): 20 lines" in caplog.text
    assert "2 small set(s) dropped (20 lines): retrieval/nli.jsonl, sts/sts.jsonl" in caplog.text
    assert "source 'labelled': 3 file(s), 60 examples" in caplog.text
    with pytest.raises(RuntimeError, match="simulated crash at step 5"):
        crash = ("+callbacks.crash._target_=test_resume.CrashAt", "+callbacks.crash.step=5")
        train(compose(tiny_run_overrides(corpus, tmp_path / "killed", *run, *crash)))
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert safe_torch_load(last)["global_step"] == 4
    _, resumed = train(compose(tiny_run_overrides(corpus, tmp_path / "resumed", *run, f"ckpt_path={last}")))
    assert resumed["trainer"].global_step == 8
    a, b = _weights(full), _weights(resumed)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed weights differ from the uninterrupted run: {different[:5]}"
    at_kill = safe_torch_load(last)["state_dict"]
    assert any(not torch.equal(at_kill[k], a[k]) for k in a)  # steps 5-8 changed the weights
