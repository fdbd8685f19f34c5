"""m3lit.model.cpu_dropout: mask statistics, exact values and gradients against naive references, and the
encoder-level guarantees (eval unchanged, seeded, replayed by gradient checkpointing, config not saved)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from m3lit.model import M3Model
from m3lit.model.chunked_attention import chunk_keep, chunks
from m3lit.model.cpu_dropout import ATTENTION_NAME, FastDropout, attention, use_fast_cpu_dropout
from m3lit.model.dropout_mask import drop_probability, keep_mask


def test_drop_probability_is_p_on_a_2_to_15_grid():
    assert drop_probability(0.1) == 3277 / 32768
    assert drop_probability(0.0) == 0.0 and drop_probability(0.5) == 0.5 and drop_probability(1.0) == 1.0


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_rate_in_both_lanes(p):
    torch.manual_seed(0)
    keep = keep_mask((1001, 999), p).flatten()  # odd size: the last word's second lane is unused
    assert keep.dtype == torch.bool and keep.numel() == 1001 * 999
    expected, n = 1 - drop_probability(p), keep.numel() // 2
    sigma = (expected * (1 - expected) / n) ** 0.5
    for lane in (keep[0::2], keep[1::2]):  # low and high 16-bit halves of the random words
        assert abs(lane.float().mean().item() - expected) < 6 * sigma


def test_keep_mask_follows_the_seed():
    torch.manual_seed(3)
    a = keep_mask((4, 5, 6), 0.3)
    b = keep_mask((4, 5, 6), 0.3)
    torch.manual_seed(3)
    assert torch.equal(keep_mask((4, 5, 6), 0.3), a) and not torch.equal(a, b)


def test_fast_dropout_values_and_gradient():
    layer = FastDropout(0.2).train()
    x = torch.randn(3, 7, 5, requires_grad=True)
    torch.manual_seed(1)
    y = layer(x)
    torch.manual_seed(1)
    keep = keep_mask(x.shape, 0.2)
    scale = 1 / (1 - drop_probability(0.2))
    torch.testing.assert_close(y, x.detach() * keep * scale, rtol=0, atol=0)
    w = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * w).sum(), x)
    torch.testing.assert_close(grad, w * keep * scale, rtol=0, atol=0)


def test_fast_dropout_eval_zero_and_one():
    x = torch.randn(4, 6)
    assert torch.equal(FastDropout(0.3).eval()(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)
    assert torch.equal(FastDropout(1.0).train()(x), torch.zeros_like(x))


def _naive_attention(q, k, v, mask, scaling, keep, p):
    scores = (q @ k.transpose(-1, -2)) * scaling
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = scores.softmax(-1)
    if keep is not None:
        probs = probs * keep / (1 - drop_probability(p))
    return (probs @ v).transpose(1, 2)


def _masks(batch, length):
    key_mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
    key_mask[1, ..., length - 3 :] = False  # second sequence: 3 padded keys
    additive = torch.zeros(batch, 1, length, length).masked_fill(~key_mask, -1e4)
    return {"none": None, "bool": key_mask, "additive": additive}


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_attention_matches_naive_with_dropout(mask_kind):
    b, h, n, d, p = 2, 3, 9, 4, 0.25
    mask = _masks(b, n)[mask_kind]
    q, k, v = (torch.randn(b, h, n, d, dtype=torch.float64) for _ in range(3))
    torch.manual_seed(5)
    out, weights = attention(nn.Module(), q, k, v, mask, dropout=p, scaling=0.4)
    torch.manual_seed(5)
    seed = int(torch.randint(2**62, (), dtype=torch.int64))  # the one draw attention makes
    keep = torch.ones(b, h, n, n, dtype=torch.bool)
    for index, (rows, queries) in enumerate(chunks(b, h, n, n)):
        keep[rows, :, queries] = chunk_keep(seed, index, keep[rows, :, queries].shape, p)
    ref = _naive_attention(q, k, v, mask, 0.4, keep, p)
    assert weights is None and out.shape == (b, n, h, d)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)  # gradients: test_chunked_attention.py


def test_attention_with_dropout_one_is_zero_with_zero_gradients():
    q, k, v = (torch.randn(2, 2, 5, 4, requires_grad=True) for _ in range(3))
    out, _ = attention(nn.Module(), q, k, v, None, dropout=1.0, scaling=0.5)
    assert torch.equal(out, torch.zeros(2, 5, 2, 4))
    out.sum().backward()
    assert all(t.grad is None or torch.equal(t.grad, torch.zeros_like(t)) for t in (q, k, v))


@pytest.mark.parametrize("mask_kind", ["none", "bool"])
def test_attention_without_dropout_is_sdpa(mask_kind):
    q, k, v = (torch.randn(2, 2, 6, 4) for _ in range(3))
    mask = _masks(2, 6)[mask_kind]
    ours, _ = attention(nn.Module(), q, k, v, mask, dropout=0.0, scaling=0.5)
    theirs, _ = sdpa_attention_forward(nn.Module(), q, k, v, mask, dropout=0.0, scaling=0.5)
    assert torch.equal(ours, theirs)


def _pair(tiny_config, tokenizer, dropout=0.1):
    """Two identical tiny models (hidden/attention dropout ``dropout``), the second with fast dropout."""
    config = type(tiny_config).from_dict(tiny_config.to_dict())
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = dropout
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    plain = M3Model.from_config(config, tokenizer, colbert_dim=16)
    fast = M3Model.from_config(config, tokenizer, colbert_dim=16)
    fast.load_state_dict(plain.state_dict())
    use_fast_cpu_dropout(fast.encoder)
    return plain, fast


def _batch(tokenizer, texts):
    enc = tokenizer(texts[:4], padding=True, truncation=True, max_length=40, return_tensors="pt")
    assert not bool(enc["attention_mask"].all())  # some padding, so the mask path is exercised
    return enc["input_ids"], enc["attention_mask"]


def test_encoder_swap_keeps_weights_and_eval_outputs(tiny_config, tokenizer, texts):
    plain, fast = _pair(tiny_config, tokenizer)
    assert fast.encoder.config._attn_implementation == ATTENTION_NAME
    dropouts = [m for m in fast.encoder.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(type(m) is FastDropout and m.p == 0.1 for m in dropouts)
    assert list(fast.state_dict()) == list(plain.state_dict())
    ids, mask = _batch(tokenizer, texts)
    plain.eval(), fast.eval()
    with torch.no_grad():
        a, b = plain(ids, mask), fast(ids, mask)
    for key in ("dense", "sparse_weights", "colbert"):
        torch.testing.assert_close(getattr(b, key), getattr(a, key), rtol=0, atol=1e-6)


def test_training_forward_is_seeded_and_checkpointing_replays_masks(tiny_config, tokenizer, texts):
    _, fast = _pair(tiny_config, tokenizer)
    ids, mask = _batch(tokenizer, texts)
    fast.train()

    def grads(checkpointing: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fast.gradient_checkpointing(checkpointing)
        fast.zero_grad()
        torch.manual_seed(11)
        out = fast(ids, mask)
        (out.dense.sum() + out.colbert.pow(2).sum()).backward()
        return out.dense.detach(), [p.grad.clone() for p in fast.parameters() if p.grad is not None]

    dense, plain_grads = grads(False)
    dense_again, _ = grads(False)
    dense_ckpt, ckpt_grads = grads(True)
    assert torch.equal(dense, dense_again) and torch.equal(dense, dense_ckpt)
    assert len(plain_grads) == len(ckpt_grads)
    for g, c in zip(plain_grads, ckpt_grads, strict=True):
        torch.testing.assert_close(c, g, rtol=1e-5, atol=1e-7)
    torch.manual_seed(12)
    assert not torch.equal(fast(ids, mask).dense, dense)  # dropout is on


def test_saved_config_keeps_standard_attention(tiny_config, tokenizer, tmp_path):
    _, fast = _pair(tiny_config, tokenizer)
    fast.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert ATTENTION_NAME not in json.dumps(saved)
    assert M3Model.from_pretrained(tmp_path).encoder.config._attn_implementation != ATTENTION_NAME
