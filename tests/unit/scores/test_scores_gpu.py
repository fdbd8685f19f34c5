"""On CUDA, scores, losses and the model give the CPU values and gradients (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from m3lit.losses import m3_loss
from m3lit.scores import colbert_scores, sparse_scores

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def on(device, *tensors):
    return [t.detach().to(device).requires_grad_(t.requires_grad) for t in tensors]


def value_and_grads(fn, inputs):
    out = fn(*inputs)
    leaves = [x for x in inputs if x.requires_grad]
    return out.detach().cpu(), [g.cpu() for g in torch.autograd.grad(out.sum(), leaves)]


def assert_cuda_matches_cpu(fn, inputs, atol=1e-5):
    cpu_value, cpu_grads = value_and_grads(fn, on("cpu", *inputs))
    gpu_value, gpu_grads = value_and_grads(fn, on("cuda", *inputs))
    torch.testing.assert_close(gpu_value, cpu_value, atol=atol, rtol=1e-4)
    for g, c in zip(gpu_grads, cpu_grads, strict=True):
        torch.testing.assert_close(g, c, atol=atol, rtol=1e-4)


def test_sparse_and_colbert_scores_match_cpu():
    g = torch.Generator().manual_seed(0)
    q_ids, p_ids = torch.randint(4, 300, (4, 16), generator=g), torch.randint(4, 300, (12, 40), generator=g)
    q_w = torch.rand(4, 16, generator=g).requires_grad_(True)
    p_w = torch.rand(12, 40, generator=g).requires_grad_(True)
    assert_cuda_matches_cpu(sparse_scores, [q_w, q_ids, p_w, p_ids])
    q_v = torch.randn(4, 9, 8, generator=g).requires_grad_(True)
    p_v = torch.randn(12, 30, 8, generator=g).requires_grad_(True)
    q_m, p_m = torch.rand(4, 9, generator=g) > 0.2, torch.rand(12, 30, generator=g) > 0.3
    assert_cuda_matches_cpu(lambda *x: colbert_scores(*x, chunk_elements=4096), [q_v, q_m, p_v, p_m])


def test_m3_loss_matches_cpu():
    g = torch.Generator().manual_seed(1)
    b, group = 4, 3
    d, s, c = (torch.randn(b, b * group, generator=g).requires_grad_(True) for _ in range(3))
    teacher = torch.randint(0, 10, (b, group), generator=g)

    def loss(d, s, c):
        return m3_loss(d, s, c, group, teacher_scores=teacher.to(d.device)).loss

    assert_cuda_matches_cpu(loss, [d, s, c])


def test_model_forward_matches_cpu(tiny_model, tokenizer, texts):
    enc = tokenizer(texts[:4], padding=True, return_tensors="pt")
    model = tiny_model.eval()
    with torch.no_grad():
        cpu = model(enc["input_ids"], enc["attention_mask"])
        gpu = model.to("cuda")(enc["input_ids"].cuda(), enc["attention_mask"].cuda())
    for field in ("dense", "sparse_weights", "colbert"):
        torch.testing.assert_close(getattr(gpu, field).cpu(), getattr(cpu, field), atol=1e-4, rtol=1e-3)
