"""m3lit.model.chunked_attention: values and gradients equal naive attention with the same explicit dropout
mask, whatever the chunking and whether backward keeps or redraws the masks; the chunk grid; mask rates."""

from __future__ import annotations

import pytest
import torch

from m3lit.model.chunked_attention import chunk_keep, chunks, dropout_attention
from m3lit.model.dropout_mask import drop_probability, keep_mask, keep_multiplier


def _explicit_keep(seed, b, h, lq, lk, p, budget):
    """The full (B, h, Lq, Lk) keep mask, assembled chunk by chunk from the chunks' own generators."""
    keep = torch.ones(b, h, lq, lk, dtype=torch.bool)
    for index, (rows, queries) in enumerate(chunks(b, h, lq, lk, budget)):
        keep[rows, :, queries] = chunk_keep(seed, index, keep[rows, :, queries].shape, p)
    return keep


def _naive(q, k, v, mask, scale, keep, p):
    """softmax(q k^T scale + mask) * keep / (1 - p') @ v, materialised: (B, Lq, h, d)."""
    scores = (q @ k.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = scores.softmax(-1) * keep / (1 - drop_probability(p))
    return (probs @ v).transpose(1, 2)


@pytest.mark.parametrize("budget", [2**18, 40, 7])  # whole batch / two sequences / query blocks of 1-2 rows
@pytest.mark.parametrize("save_max_keys", [512, 0])  # masks kept for backward / redrawn in backward
@pytest.mark.parametrize("mask_kind", ["none", "key_bool", "full_additive"])
def test_values_and_gradients_equal_naive_attention_with_the_same_mask(budget, save_max_keys, mask_kind):
    b, h, lq, lk, d, p, scale = 3, 2, 5, 6, 4, 0.3, 0.45
    torch.manual_seed(0)
    q = torch.randn(b, h, lq, d, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(b, h, lk, d, dtype=torch.float64, requires_grad=True) for _ in range(2))
    key_mask = torch.ones(b, 1, 1, lk, dtype=torch.bool)
    key_mask[1, ..., -2:] = False
    mask = {
        "none": None,
        "key_bool": key_mask,
        "full_additive": torch.randn(b, 1, lq, lk, dtype=torch.float64).masked_fill(~key_mask, -1e4),
    }[mask_kind]
    torch.manual_seed(7)
    out = dropout_attention(q, k, v, mask, scale, p, budget=budget, save_max_keys=save_max_keys)
    torch.manual_seed(7)
    seed = int(torch.randint(2**62, (), dtype=torch.int64))
    keep = _explicit_keep(seed, b, h, lq, lk, p, budget)
    assert 0 < keep.sum() < keep.numel()  # some dropped, some kept
    ref = _naive(q, k, v, mask, scale, keep, p)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(ref)
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref * w).sum(), (q, k, v))
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_chunks_cover_every_query_row_once_within_the_budget():
    for b, h, lq, lk, budget in [(3, 2, 5, 6, 7), (4, 3, 8, 8, 200), (2, 1, 9, 4, 10**6), (1, 2, 3, 50, 1)]:
        seen = torch.zeros(b, lq, dtype=torch.int64)
        for rows, queries in chunks(b, h, lq, lk, budget):
            seen[rows, queries] += 1
            n_rows = len(range(b)[rows]) * len(range(lq)[queries])
            assert n_rows == 1 or n_rows * h * lk <= budget
        assert torch.equal(seen, torch.ones(b, lq, dtype=torch.int64))


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9999])
def test_keep_multiplier_is_the_keep_mask_as_0_and_1_and_chunk_masks_differ(p):
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    multiplier = keep_multiplier((71, 93), p, g1)
    assert multiplier.dtype == torch.int16
    assert torch.equal(multiplier, keep_mask((71, 93), p, g2).to(torch.int16))
    a, b = chunk_keep(10, 0, (64, 64), 0.5), chunk_keep(10, 1, (64, 64), 0.5)
    assert torch.equal(a, chunk_keep(10, 0, (64, 64), 0.5)) and not torch.equal(a, b)
    rate, n = 1 - drop_probability(0.5), a.numel()
    assert abs(a.double().mean().item() - rate) < 6 * (rate * (1 - rate) / n) ** 0.5


def test_attention_follows_the_default_generator():
    q, k, v = (torch.randn(2, 2, 4, 3) for _ in range(3))
    torch.manual_seed(1)
    a = dropout_attention(q, k, v, None, 0.5, 0.5)
    b = dropout_attention(q, k, v, None, 0.5, 0.5)
    torch.manual_seed(1)
    assert torch.equal(dropout_attention(q, k, v, None, 0.5, 0.5), a) and not torch.equal(a, b)
