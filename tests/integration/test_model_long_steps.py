"""Long documents (issue 14), stage-2 steps at 1k-8192 tokens: with gradient checkpointing and the gradient
cache a step gives the loss and every parameter gradient of the plain step (no checkpointing, no cache) at a
length both fit, and runs at 8192 tokens with finite loss and gradients. The corpus checks:
tests/unit/model/test_long_docs.py.
"""

from __future__ import annotations

from functools import partial

import torch

from m3lit.data.batch import Encoded
from m3lit.model import M3Model
from m3lit.model.cpu_dropout import use_fast_cpu_dropout
from m3lit.model.positions import extend_position_embeddings
from m3lit.model.tiny import tiny_xlmr_config
from m3lit.training.gradcache import gradcache_step, split_batch_step
from m3lit.training.objective import m3_objective
from m3lit.training.stages import stage_spec


# ---------------------------------------------------------------------------------------------- steps
def _long_model(tokenizer, length: int, dropout: float, attention_dropout: float | None = None) -> M3Model:
    """A tiny XLM-R built at 512 tokens, positions extended to ``length``, with the training path's
    CPU dropout (``attention_dropout``: on the attention probabilities, default ``dropout``)."""
    config = tiny_xlmr_config(len(tokenizer), hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                              max_length=512, dropout=dropout)  # fmt: skip
    if attention_dropout is not None:
        config.attention_probs_dropout_prob = attention_dropout
    torch.manual_seed(0)
    model = M3Model.from_config(config, tokenizer, colbert_dim=16).train()
    extend_position_embeddings(model, length)
    use_fast_cpu_dropout(model.encoder)
    return model


def _rows(lengths: list[int], vocab: int, seed: int) -> list[Encoded]:
    """One sub-batch per text: ids <s> random </s>, exactly ``lengths[i]`` tokens each."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(5, vocab, (1, n), generator=gen)
        ids[0, 0], ids[0, -1] = 0, 2
        out.append(Encoded(ids, torch.ones_like(ids)))
    return out


def _merge(subs: list[Encoded], pad_id: int) -> Encoded:
    """The sub-batches as one right-padded batch."""
    width = max(s.input_ids.shape[1] for s in subs)
    ids = torch.full((len(subs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, sub in enumerate(subs):
        n = sub.input_ids.shape[1]
        ids[row, :n], mask[row, :n] = sub.input_ids[0], sub.attention_mask[0]
    return Encoded(ids, mask)


def _stage2_step(model, queries, passages, group: int, *, cache: bool):
    spec = stage_spec("unified_self_distill")
    step = gradcache_step if cache else split_batch_step
    torch.manual_seed(1234)
    out = step(
        model, queries, passages, heads={"dense": True, "sparse": True, "colbert": True},
        loss_fn=partial(m3_objective, group_size=group, stage=spec), backward=lambda loss: loss.backward(),
        pad_token_id=model.tokenizer.pad_token_id,
    )  # fmt: skip
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), {k: v.detach() for k, v in out.parts.items()}, grads


def _assert_same(ref, other, rtol=1e-4, atol=5e-6):
    torch.testing.assert_close(other[0], ref[0], rtol=1e-6, atol=1e-6)
    assert other[1].keys() == ref[1].keys()
    for key in ref[1]:
        torch.testing.assert_close(other[1][key], ref[1][key], rtol=1e-6, atol=1e-6, msg=key)
    assert other[2].keys() == ref[2].keys()
    for name in ref[2]:
        torch.testing.assert_close(other[2][name], ref[2][name], rtol=rtol, atol=atol, msg=name)


def test_long_stage2_step_with_checkpointing_and_gradcache_equals_the_plain_step(tokenizer):
    """1024-token passages (and shorter ones, so sub-batches differ in length), dropout on: the plain step
    encodes with graph and no checkpointing; the other step checkpoints and caches gradients."""
    group, lengths = 2, [1024, 700, 1024, 860]
    queries = _rows([24, 17], len(tokenizer), seed=1)
    passages = _rows(lengths, len(tokenizer), seed=2)
    plain = _long_model(tokenizer, 2048, dropout=0.1)
    ref = _stage2_step(plain, queries, passages, group, cache=False)
    assert {"dense", "sparse", "colbert"} <= set(ref[1]) and "self_distill" in ref[1]
    assert all(g.abs().sum() > 0 for n, g in ref[2].items() if "position" not in n)
    cached = _long_model(tokenizer, 2048, dropout=0.1)
    cached.gradient_checkpointing(True)
    _assert_same(ref, _stage2_step(cached, queries, passages, group, cache=True))
    # without dropout the sub-batched step also equals ONE full padded batch
    full = _long_model(tokenizer, 2048, dropout=0.0)
    pad = full.tokenizer.pad_token_id
    ref_full = _stage2_step(full, [_merge(queries, pad)], [_merge(passages, pad)], group, cache=False)
    nodrop = _long_model(tokenizer, 2048, dropout=0.0)
    nodrop.gradient_checkpointing(True)
    _assert_same(ref_full, _stage2_step(nodrop, queries, passages, group, cache=True))


def test_8192_token_stage2_step_runs_with_checkpointing_and_gradcache(tokenizer):
    """Hidden-state dropout on; attention dropout off, so CPU SDPA runs its flash kernel (with attention
    dropout, CPU attention builds the (8192 x 8192) scores per head: 4x the time: ``python -m benchmarks.long_docs`` at df23c1b, docs/long-documents.md)."""
    model = _long_model(tokenizer, 8192, dropout=0.1, attention_dropout=0.0)
    model.gradient_checkpointing(True)
    assert model.max_length == 8192
    queries = _rows([32], len(tokenizer), seed=3)
    passages = _rows([8192, 8192], len(tokenizer), seed=4)
    loss, parts, grads = _stage2_step(model, queries, passages, 2, cache=True)
    assert torch.isfinite(loss) and all(torch.isfinite(v).all() for v in parts.values())
    assert all(torch.isfinite(g).all() for g in grads.values())
    positions = grads["encoder.embeddings.position_embeddings.weight"]
    # every extended position row up to 8192 tokens received a gradient (offset 2: XLM-R padding rows)
    assert bool((positions[2 : 2 + 8192].abs().sum(-1) > 0).all())
    assert {n.split(".")[0] for n in grads} >= {"encoder", "sparse_head", "colbert_head"}
