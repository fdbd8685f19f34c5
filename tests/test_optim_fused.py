"""Fused AdamW: on by default at full precision (as FlagEmbedding's HF Trainer), off under mixed precision.

Lightning's mixed-precision plugins refuse gradient clipping for an optimizer that unscales gradients itself
(a fused one); a bf16-mixed run must therefore get the per-tensor AdamW and still clip and step.
"""

from __future__ import annotations

import torch

from m3lit.config import compose
from m3lit.train import train
from m3lit.training.optim import build_optimizer
from tests.train_utils import tiny_corpus, tiny_run_overrides


def test_build_optimizer_fuses_float_cpu_parameters_and_matches_the_loop():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fused = build_optimizer([{"params": params, "weight_decay": 0.01}], lr=0.1)
    loop = build_optimizer([{"params": copies, "weight_decay": 0.01}], lr=0.1, fused=False)
    assert fused.defaults["fused"] is True and loop.defaults["fused"] is False
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        for p, q, g in zip(params, copies, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        loop.step()
    for p, q in zip(params, copies, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_trainer_uses_fused_adamw_only_at_full_precision(tmp_path, tokenizer):
    corpus = tiny_corpus(tmp_path / "data", tokenizer)
    for precision, fused in (("32-true", True), ("bf16-mixed", False)):
        cfg = compose(
            tiny_run_overrides(
                corpus, tmp_path / precision, f"trainer.precision={precision}", "trainer.max_steps=1",
                "export=false", "model.max_grad_norm=1.0",
            )
        )  # fmt: skip
        metrics, objects = train(cfg)
        assert objects["trainer"].global_step == 1
        assert objects["trainer"].optimizers[0].defaults["fused"] is fused
        assert torch.isfinite(torch.tensor(metrics["train/loss"]))
