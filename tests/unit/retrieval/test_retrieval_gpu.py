"""Retrieval evaluation with the model on a CUDA device: same results as on the CPU; the callback follows
the module's device. Needs a GPU (``-m gpu``); ``make test`` deselects these."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from m3lit.model import M3Model
from m3lit.retrieval import MODES, RetrievalConfig, load_beir, retrieve

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CFG = RetrievalConfig(batch_size=16, query_max_len=64, passage_max_len=64)


def test_cuda_rankings_equal_cpu_rankings(tiny_config, tokenizer, tiny_beir_dir):
    torch.manual_seed(0)
    model = M3Model.from_config(tiny_config, tokenizer, colbert_dim=16).eval()
    with torch.no_grad():
        model.sparse_head.linear.bias.fill_(0.5)
    dataset = load_beir(tiny_beir_dir)
    cpu = retrieve(model, dataset, MODES, CFG, depth=10)
    gpu = retrieve(model.to("cuda"), dataset, MODES, CFG, depth=10)
    for mode in MODES:
        a, b = cpu.rankings[mode], gpu.rankings[mode]
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-4, err_msg=mode)  # TF32-free fp32 kernels
        agree = (a.indices == b.indices).mean()
        assert agree > 0.9, f"{mode}: only {agree:.0%} of the ranked documents agree"


def test_callback_evaluates_on_the_module_device(tiny_config, tokenizer, tiny_beir_dir):
    from test_retrieval_callback import FAST, RetrievalMetrics, keys, loader, make_module

    from m3lit.retrieval import MODEL_MODES

    module = make_module(tiny_config, tokenizer)
    callback = RetrievalMetrics(tiny_beir_dir, every_n_steps=1, retrieval=FAST)
    trainer = L.Trainer(
        max_steps=2, accelerator="gpu", devices=1, logger=False, enable_checkpointing=False,
        callbacks=[callback], enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, loader(tokenizer, tiny_beir_dir))
    assert module.device.type == "cuda"
    assert [step for step, _ in callback.history] == [1, 2]
    assert {k for k in trainer.callback_metrics if k.startswith("val/")} == keys([*MODEL_MODES, "bm25"])
