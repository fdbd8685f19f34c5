"""Score functions against naive references written straight from the formulas, in value and gradient."""

from __future__ import annotations

import pytest
import torch

from m3lit.scores import (
    colbert_scores,
    colbert_scores_pairwise,
    dense_scores,
    dense_scores_pairwise,
    fused_scores,
    sparse_scores,
    sparse_scores_pairwise,
)

PAD = 1


# ------------------------------------------------------------------------------------------- references
def naive_dense(q, p):
    return torch.stack(
        [
            torch.stack([sum(q[a, k] * p[b, k] for k in range(q.shape[1])) for b in range(len(p))])
            for a in range(len(q))
        ]
    )


def pooled_dict(weights, ids):
    """{token id: max weight over its positions} for one text, by a python loop over tokens."""
    best = {}
    for w, t in zip(weights, ids.tolist(), strict=True):
        best[t] = w if t not in best else torch.maximum(best[t], w)
    return best


def naive_sparse_loop(qw, qi, pw, pi):
    """s_lex = sum over tokens shared by q and p of max-pooled w_q,t * w_p,t (python loops over tokens)."""
    rows = []
    for a in range(len(qi)):
        vq = pooled_dict(qw[a], qi[a])
        row = []
        for b in range(len(pi)):
            vp = pooled_dict(pw[b], pi[b])
            shared = [vq[t] * vp[t] for t in vq if t in vp]
            row.append(torch.stack(shared).sum() if shared else qw.new_zeros(()))
        rows.append(torch.stack(row))
    return torch.stack(rows)


def naive_sparse_vocab(qw, qi, pw, pi, vocab_size):
    """The spec's definition: explicit (B, L, V) scatter, max over L, then v_q @ v_p.T."""

    def vocab_vectors(w, ids):
        full = torch.zeros(*ids.shape, vocab_size, dtype=w.dtype).scatter(
            -1, ids.unsqueeze(-1), w.unsqueeze(-1)
        )
        return full.max(dim=1).values  # (B, V)

    return vocab_vectors(qw, qi) @ vocab_vectors(pw, pi).T


def naive_colbert(qv, qm, pv, pm):
    """sum_i over real query tokens of max_j over real passage tokens <q_i, p_j>, / number of real query tokens."""
    out = torch.zeros(len(qv), len(pv), dtype=qv.dtype)
    rows = []
    for a in range(len(qv)):
        row = []
        for b in range(len(pv)):
            total, count = qv.new_zeros(()), 0
            for i in range(qv.shape[1]):
                if not qm[a, i]:
                    continue
                count += 1
                dots = [torch.dot(qv[a, i], pv[b, j]) for j in range(pv.shape[1]) if pm[b, j]]
                total = total + (torch.stack(dots).max() if dots else 0.0)
            row.append(total / max(count, 1))
        rows.append(torch.stack(row))
    return torch.stack(rows) if rows else out


def assert_same_value_and_grad(fn, reference, inputs, atol=1e-6):
    out = fn(*inputs)
    ref = reference(*inputs)
    torch.testing.assert_close(out, ref, atol=atol, rtol=1e-5)
    upstream = torch.randn_like(out)
    leaves = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
    got = torch.autograd.grad((out * upstream).sum(), leaves)
    want = torch.autograd.grad((ref * upstream).sum(), leaves)
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r, atol=atol, rtol=1e-5)


# ------------------------------------------------------------------------------------------- fixtures
def token_batch(rows, length, vocab, seed, pad_from=None):
    """Random positive weights (requires grad) and ids with duplicates, specials and trailing padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (rows, length), generator=g)
    ids[:, 0] = 0  # <s>
    ids[:, 2] = ids[:, 1]  # a duplicated token in every row
    weights = torch.rand(rows, length, generator=g, dtype=torch.float64) + 0.05
    if pad_from is not None:
        for r, start in enumerate(pad_from):
            ids[r, start - 1] = 2  # </s>
            ids[r, start:] = PAD
    special = torch.isin(ids, torch.tensor([0, PAD, 2]))
    weights = (weights * ~special).requires_grad_(
        True
    )  # specials and padding weigh 0, as SparseHead makes them
    return weights, ids


# ------------------------------------------------------------------------------------------- dense
def test_dense_matches_naive_in_value_and_grad():
    torch.manual_seed(0)
    q = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    p = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert_same_value_and_grad(dense_scores, naive_dense, (q, p))
    torch.testing.assert_close(dense_scores_pairwise(q, p[:3]), torch.diagonal(naive_dense(q, p[:3])))


# ------------------------------------------------------------------------------------------- sparse
@pytest.mark.parametrize("query_rows, query_len", [(3, 6), (5, 30)])  # the second has more query tokens
def test_sparse_matches_loop_and_vocab_references(query_rows, query_len):
    vocab = 23  # small, so rows share many ids and duplicates are frequent
    qw, qi = token_batch(
        query_rows, query_len, vocab, seed=1, pad_from=[query_len - 2] + [query_len] * (query_rows - 1)
    )
    pw, pi = token_batch(4, 9, vocab, seed=2, pad_from=[5, 9, 7, 9])
    assert_same_value_and_grad(sparse_scores, naive_sparse_loop, (qw, qi, pw, pi))
    assert_same_value_and_grad(
        sparse_scores, lambda *x: naive_sparse_vocab(*x, vocab_size=vocab), (qw, qi, pw, pi)
    )


def test_sparse_duplicate_tokens_keep_their_max():
    q_w = torch.tensor([[0.5, 0.2, 0.9, 0.0]], requires_grad=True)
    q_ids = torch.tensor([[7, 9, 7, PAD]])
    p_w = torch.tensor([[1.0, 3.0, 2.0]], requires_grad=True)
    p_ids = torch.tensor([[7, 9, 9]])
    score = sparse_scores(q_w, q_ids, p_w, p_ids)
    assert score.item() == pytest.approx(0.9 * 1.0 + 0.2 * 3.0)
    score.sum().backward()
    # only the maximal occurrence of each shared token receives gradient
    assert q_w.grad.tolist() == [[0.0, pytest.approx(3.0), pytest.approx(1.0), 0.0]]
    assert p_w.grad.tolist() == [[pytest.approx(0.9), pytest.approx(0.2), 0.0]]


def test_sparse_no_shared_tokens_gives_zero():
    q_w, q_ids = torch.tensor([[0.4, 0.6]]), torch.tensor([[5, 6]])
    p_w, p_ids = torch.tensor([[1.0], [2.0]]), torch.tensor([[8], [9]])
    assert sparse_scores(q_w, q_ids, p_w, p_ids).tolist() == [[0.0, 0.0]]


def test_sparse_padding_invariance():
    vocab = 40
    qw, qi = token_batch(2, 7, vocab, seed=3)
    pw, pi = token_batch(3, 11, vocab, seed=4)
    base = sparse_scores(qw, qi, pw, pi)
    q_pad = torch.cat([qi, torch.full((2, 5), PAD)], 1), torch.cat([qw, torch.zeros(2, 5, dtype=qw.dtype)], 1)
    p_pad = torch.cat([pi, torch.full((3, 9), PAD)], 1), torch.cat([pw, torch.zeros(3, 9, dtype=pw.dtype)], 1)
    padded = sparse_scores(q_pad[1], q_pad[0], p_pad[1], p_pad[0])
    torch.testing.assert_close(padded, base, atol=0, rtol=0)


def test_sparse_pairwise_is_the_diagonal():
    vocab = 17
    qw, qi = token_batch(4, 6, vocab, seed=5)
    pw, pi = token_batch(4, 10, vocab, seed=6, pad_from=[10, 4, 8, 10])
    assert_same_value_and_grad(
        sparse_scores_pairwise, lambda *x: torch.diagonal(naive_sparse_loop(*x)), (qw, qi, pw, pi)
    )


# ------------------------------------------------------------------------------------------- colbert
def colbert_batch(rows, length, dim, seed, real_lengths):
    g = torch.Generator().manual_seed(seed)
    vecs = torch.randn(rows, length, dim, generator=g, dtype=torch.float64)
    mask = torch.arange(length)[None] < torch.tensor(real_lengths)[:, None]
    # padded rows carry garbage on purpose: the mask alone must exclude them
    return vecs.requires_grad_(True), mask


@pytest.mark.parametrize("chunk_elements", [64 * 1024 * 1024, 50])  # one chunk / one passage per chunk
@pytest.mark.parametrize("recompute", [None, False, True])
def test_colbert_matches_naive(chunk_elements, recompute):
    qv, qm = colbert_batch(3, 5, 4, seed=7, real_lengths=[5, 2, 3])
    pv, pm = colbert_batch(4, 6, 4, seed=8, real_lengths=[6, 1, 4, 3])
    fn = lambda *x: colbert_scores(*x, chunk_elements=chunk_elements, recompute=recompute)  # noqa: E731
    assert_same_value_and_grad(fn, naive_colbert, (qv, qm, pv, pm))


def test_colbert_tied_maxima_share_the_gradient_like_the_naive_max():
    """Exactly tied maxima (a repeated passage vector): the gradient is shared evenly, in both paths."""
    qv, qm = colbert_batch(2, 3, 4, seed=13, real_lengths=[3, 2])
    pv, pm = colbert_batch(3, 5, 4, seed=14, real_lengths=[5, 4, 0])  # passage 2 has no real token
    pv = torch.cat([pv[:, :1], pv[:, :1], pv[:, 2:]], 1).detach().requires_grad_(True)  # tokens 0 and 1 tie
    sim = torch.einsum("aid,bjd->aibj", qv, pv).detach()
    assert bool(
        (sim[..., 0] == sim.masked_fill(~pm, -torch.inf).amax(-1))[:, :, :2].any()
    )  # a tie is the max
    for recompute in (True, False):
        fn = lambda *x, r=recompute: colbert_scores(*x, chunk_elements=40, recompute=r)  # noqa: E731
        assert_same_value_and_grad(fn, naive_colbert, (qv, qm, pv, pm))


def test_colbert_training_path_keeps_no_similarity_block_for_backward():
    """The recomputing path saves only its inputs: nothing block-sized (Bq*Lq*C*Lp) waits for backward."""
    qv, qm = colbert_batch(4, 6, 3, seed=15, real_lengths=[6, 5, 4, 3])
    pv, pm = colbert_batch(8, 7, 3, seed=16, real_lengths=[7, 6, 5, 4, 3, 2, 1, 7])
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        colbert_scores(qv, qm, pv, pm, chunk_elements=4 * 6 * 7 * 2).sum().backward()
    assert max(saved) <= pv.numel() < 4 * 6 * 2 * 7
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        colbert_scores(qv, qm, pv, pm, chunk_elements=4 * 6 * 7 * 2, recompute=False).sum().backward()
    assert max(saved) >= 4 * 6 * 2 * 7  # plain autograd keeps each (4, 6, 2, 7) block for amax


def test_colbert_gradient_to_one_side_only_and_non_contiguous_inputs():
    qv, qm = colbert_batch(3, 4, 5, seed=17, real_lengths=[4, 3, 1])
    pv, pm = colbert_batch(4, 6, 5, seed=18, real_lengths=[6, 2, 5, 3])
    q_t = qv.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_(True)  # non-contiguous
    assert not q_t.is_contiguous()
    assert_same_value_and_grad(
        lambda *x: colbert_scores(*x, chunk_elements=30), naive_colbert, (q_t, qm, pv, pm)
    )
    frozen = pv.detach()
    assert_same_value_and_grad(colbert_scores, naive_colbert, (qv, qm, frozen, pm))


def test_colbert_negative_max_is_not_clipped_and_empty_sides_score_zero():
    q = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    qm = torch.tensor([[True, False]])
    p = torch.tensor([[[-1.0, 0.0], [5.0, 5.0]], [[9.0, 9.0], [9.0, 9.0]]])
    pm = torch.tensor([[True, False], [False, False]])
    # passage 0: the only real token has dot -1 (the padded 5.0 token must not win); passage 1 is empty
    assert colbert_scores(q, qm, p, pm).tolist() == [[-1.0, 0.0]]
    assert colbert_scores(q, torch.tensor([[False, False]]), p, pm).tolist() == [[0.0, 0.0]]


def test_colbert_padding_invariance():
    qv, qm = colbert_batch(2, 4, 3, seed=9, real_lengths=[4, 2])
    pv, pm = colbert_batch(3, 5, 3, seed=10, real_lengths=[5, 3, 1])
    base = colbert_scores(qv, qm, pv, pm)
    extra_q = torch.randn(2, 3, 3, dtype=torch.float64)
    extra_p = torch.randn(3, 6, 3, dtype=torch.float64)
    padded = colbert_scores(
        torch.cat([qv, extra_q], 1),
        torch.cat([qm, torch.zeros(2, 3, dtype=torch.bool)], 1),
        torch.cat([pv, extra_p], 1),
        torch.cat([pm, torch.zeros(3, 6, dtype=torch.bool)], 1),
    )
    torch.testing.assert_close(padded, base, atol=1e-12, rtol=0)  # float64: only summation-order rounding


def test_colbert_pairwise_is_the_diagonal():
    qv, qm = colbert_batch(3, 4, 3, seed=11, real_lengths=[4, 1, 3])
    pv, pm = colbert_batch(3, 6, 3, seed=12, real_lengths=[2, 6, 5])
    assert_same_value_and_grad(
        colbert_scores_pairwise, lambda *x: torch.diagonal(naive_colbert(*x)), (qv, qm, pv, pm)
    )


# ------------------------------------------------------------------------------------------- fused
def test_fused_scores_weighted_sum_and_normalised():
    d, s, c = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 5.0]]), torch.tensor([[0.5, -1.0]])
    assert fused_scores(d, s, c)[0].tolist() == pytest.approx([1 + 0.3 * 3 + 0.5, 2 + 0.3 * 5 - 1])
    normalised = fused_scores(d, s, None, weights=(0.4, 0.2, 0.4), normalize=True)
    assert normalised[0].tolist() == pytest.approx([(0.4 * 1 + 0.2 * 3) / 0.6, (0.4 * 2 + 0.2 * 5) / 0.6])


# ------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="query dim 3 != passage dim 4"):
        dense_scores(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="q_weights .* and q_ids .* must have the same shape"):
        sparse_scores(
            torch.zeros(2, 3),
            torch.zeros(2, 4, dtype=torch.long),
            torch.zeros(1, 2),
            torch.zeros(1, 2, dtype=torch.long),
        )
    with pytest.raises(ValueError, match="integer token ids"):
        sparse_scores(
            torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="p_mask .* does not align"):
        colbert_scores(torch.zeros(1, 2, 3), torch.ones(1, 2), torch.zeros(1, 4, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match="as many passages as queries"):
        dense_scores_pairwise(torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="score shapes differ"):
        fused_scores(torch.zeros(1, 2), torch.zeros(2, 1), None)


def test_colbert_backward_under_bf16_autocast_equals_float32():
    """A bf16-mixed step calls backward inside autocast; the float32 scores' gradients must not change."""
    torch.manual_seed(0)
    q, p = torch.randn(2, 5, 8), torch.randn(6, 7, 8)
    q_mask, p_mask = torch.ones(2, 5, dtype=torch.bool), torch.ones(6, 7, dtype=torch.bool)
    grads = []
    for autocast in (False, True):
        qg, pg = q.clone().requires_grad_(), p.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            with torch.autocast("cpu", enabled=False):
                scores = colbert_scores(qg, q_mask, pg, p_mask)
            scores.sum().backward()
        grads.append((qg.grad, pg.grad))
    for ref, got in zip(grads[0], grads[1], strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
