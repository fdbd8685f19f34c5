"""Row-wise embedding gradient: same dense ``.grad`` as the usual backward, without a (V, H) table per call."""

from __future__ import annotations

from functools import partial

import torch

from m3lit.data.batch import Encoded
from m3lit.training.embedding_grad import row_wise_embedding_grad, zero_grad_keeping
from m3lit.training.gradcache import gradcache_step, split_batch_step
from m3lit.training.objective import m3_objective
from m3lit.training.stages import stage_spec


def test_embedding_grad_is_the_sum_of_output_grads_per_row():
    """grad W[v] = sum of dL/dE[t] over the tokens t with id v (padding row 0), over several lookups."""
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(11, 4, padding_idx=1)
    calls = [torch.tensor([[0, 5, 5, 1], [3, 5, 1, 1]]), torch.tensor([[0, 3, 7, 9, 5, 1]])]
    weights = [torch.randn(*ids.shape, 4) for ids in calls]
    with row_wise_embedding_grad(embedding):
        for ids, w in zip(calls, weights, strict=True):
            (embedding(ids) * w).sum().backward()
    assert not embedding.sparse and embedding.weight.grad.layout == torch.strided
    expected = torch.zeros(11, 4)
    for ids, w in zip(calls, weights, strict=True):
        for t, v in enumerate(ids.flatten().tolist()):
            if v != 1:
                expected[v] += w.reshape(-1, 4)[t]
    torch.testing.assert_close(embedding.weight.grad, expected, rtol=1e-6, atol=1e-6)


def _grads(tiny_model, tokenizer, texts, step, row_wise: bool):
    model = tiny_model.train()
    for p in model.parameters():
        p.grad = None
    enc = partial(tokenizer, truncation=True, padding=True, return_tensors="pt")
    q, p = enc(texts[:2], max_length=16), enc(texts[2:8], max_length=40)
    spec = stage_spec("unified_self_distill")
    torch.manual_seed(7)
    with row_wise_embedding_grad(model.encoder.get_input_embeddings() if row_wise else None):
        step(
            model,
            [Encoded(q["input_ids"], q["attention_mask"])],
            [
                Encoded(p["input_ids"][:3], p["attention_mask"][:3]),
                Encoded(p["input_ids"][3:], p["attention_mask"][3:]),
            ],
            heads={"dense": True, "sparse": True, "colbert": True},
            loss_fn=partial(m3_objective, group_size=3, stage=spec),
            backward=lambda loss: loss.backward(),
            pad_token_id=tokenizer.pad_token_id,
        )
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_split_and_gradcache_steps_give_the_usual_gradients(tiny_model, tokenizer, texts):
    for step in (split_batch_step, gradcache_step):
        ref = _grads(tiny_model, tokenizer, texts, step, row_wise=False)
        new = _grads(tiny_model, tokenizer, texts, step, row_wise=True)
        assert new.keys() == ref.keys()
        for name in ref:
            assert new[name].layout == torch.strided, name
            torch.testing.assert_close(new[name], ref[name], rtol=1e-5, atol=1e-7, msg=name)
        again = _grads(tiny_model, tokenizer, texts, step, row_wise=True)
        assert all(torch.equal(again[n], new[n]) for n in new), "row-wise accumulation must be deterministic"


def test_zero_grad_keeping_zeroes_the_kept_buffer_in_place_and_drops_the_rest():
    a, b = torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([a, b])
    a.grad, b.grad = torch.ones(3, 2), torch.ones(2)
    buffer = a.grad
    zero_grad_keeping(optimizer, a)
    assert a.grad is buffer and not buffer.any() and b.grad is None
    zero_grad_keeping(optimizer, None)
    assert a.grad is None
