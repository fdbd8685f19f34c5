"""Fused AdamW: on by default (as FlagEmbedding's HF Trainer), also under bf16-mixed; off under fp16 loss scaling.

Lightning's mixed-precision plugins refuse gradient clipping for an optimizer that unscales gradients itself
(a fused one); without a loss scaler ``M3LitModule`` clips directly, so a bf16-mixed run keeps the fused kernel
and its gradients are still clipped to ``max_grad_norm``.
"""

from __future__ import annotations

import lightning as L
import torch

from m3lit.config.compose import compose
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


class GradNormAtStep(L.Callback):
    """Records the global gradient norm the optimizer sees (after clipping)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [
            p.grad.float().norm() for g in optimizer.param_groups for p in g["params"] if p.grad is not None
        ]
        self.norms.append(float(torch.stack(grads).norm()))


def test_trainer_uses_fused_adamw_and_clips_at_full_precision_and_bf16(tmp_path, tokenizer):
    corpus = tiny_corpus(tmp_path / "data", tokenizer)
    max_norm = 1e-3  # far below the raw gradient norm of a fresh model, so clipping must act
    for precision in ("32-true", "bf16-mixed"):
        cfg = compose(
            tiny_run_overrides(
                corpus, tmp_path / precision, f"trainer.precision={precision}", "trainer.max_steps=2",
                "export=false", f"model.max_grad_norm={max_norm}",
                f"+callbacks.grad_norm._target_={__name__}.GradNormAtStep",
            )
        )  # fmt: skip
        metrics, objects = train(cfg)
        probe = next(c for c in objects["callbacks"] if isinstance(c, GradNormAtStep))
        assert objects["trainer"].global_step == 2
        assert objects["trainer"].optimizers[0].defaults["fused"] is True
        assert torch.isfinite(torch.tensor(metrics["train/loss"]))
        assert len(probe.norms) == 2
        for norm in probe.norms:
            assert abs(norm - max_norm) < 1e-4 * max_norm + 1e-6, (precision, probe.norms)
