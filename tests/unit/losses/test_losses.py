"""Losses against naive references written straight from the formulas (python loops, float64)."""

from __future__ import annotations

import math

import pytest
import torch

from m3lit.losses import (
    M3LossWeights,
    info_nce,
    kl_div_loss,
    m3_kd_loss,
    m3_loss,
    self_distill_loss,
    teacher_distribution,
)

TAU = 0.05


# ------------------------------------------------------------------------------------------- references
def log_softmax_at(row, columns, target, tau):
    """log( exp(row[target]/tau) / sum_{j in columns} exp(row[j]/tau) ), by an explicit sum."""
    denom = sum(torch.exp(row[j] / tau) for j in columns)
    return row[target] / tau - torch.log(denom)


def naive_info_nce(scores, group, tau, offset=0, in_batch=True):
    total = 0.0
    for b in range(scores.shape[0]):
        start = (offset + b) * group
        columns = range(scores.shape[1]) if in_batch else range(start, start + group)
        total = total - log_softmax_at(scores[b], columns, start, tau)
    return total / scores.shape[0]


def naive_m3_kd(scores, teacher, group, tau, offset=0, in_batch=True):
    """sum_i mean_b t_b,i * CE(row without the group members before i, target member i)."""
    loss = 0.0
    for i in range(group):
        acc = 0.0
        for b in range(scores.shape[0]):
            start = (offset + b) * group
            pool = range(scores.shape[1]) if in_batch else range(start, start + group)
            columns = [j for j in pool if not start <= j < start + i]
            acc = acc - teacher[b, i] * log_softmax_at(scores[b], columns, start + i, tau)
        loss = loss + acc / scores.shape[0]
    return loss


def naive_soft_ce(student, teacher_scores, tau, offset=0, group=None):
    """-mean_b sum_j softmax(teacher/tau)_b,j log softmax(student/tau)_b,j (teacher already a detached copy)."""
    total = 0.0
    for b in range(student.shape[0]):
        cols = range(student.shape[1])
        z = sum(math.exp(teacher_scores[b, j].item() / tau) for j in cols)
        for j in cols:
            p = math.exp(teacher_scores[b, j].item() / tau) / z
            total = total - p * log_softmax_at(student[b], cols, j, tau)
    return total / student.shape[0]


def naive_kl_div(scores, teacher, group, tau, offset=0, in_batch=True):
    own = torch.stack(
        [scores[b, (offset + b) * group : (offset + b + 1) * group] for b in range(scores.shape[0])]
    )
    distill = 0.0
    for b in range(own.shape[0]):
        for j in range(group):
            distill = distill - teacher[b, j] * log_softmax_at(own[b], range(group), j, tau)
    return distill / own.shape[0] + naive_info_nce(scores, group, tau, offset, in_batch)


def own_groups(scores, group, offset=0):
    return torch.stack(
        [scores[b, (offset + b) * group : (offset + b + 1) * group] for b in range(scores.shape[0])]
    )


def naive_m3(
    dense, sparse, colbert, group, tau, w, teacher=None, kd="m3_kd_loss", offset=0, in_batch=True, sd=True
):
    """The unified loss from its definition, with every weight named."""
    n = dense.shape[0]

    def head(s, off):
        if teacher is None:
            return naive_info_nce(s, group, tau, off, in_batch)
        if kd == "m3_kd_loss":
            return naive_m3_kd(s, teacher, group, tau, off, in_batch)
        return naive_kl_div(s, teacher, group, tau, off, in_batch)

    l_dense = head(dense, offset)
    if sparse is None:
        return l_dense
    cols = slice(offset * group, (offset + n) * group)
    gathered = sparse.shape[1] != n * group  # sparse/ColBERT gathered across devices like dense
    head_offset = offset if gathered else 0
    local = dense[:, cols]
    local_s, local_c = (sparse[:, cols], colbert[:, cols]) if gathered else (sparse, colbert)
    inter = w.ensemble_dense * local + w.ensemble_sparse * local_s + w.ensemble_colbert * local_c
    big_l = (
        w.dense * l_dense
        + w.inter * head(inter, 0)
        + w.sparse * head(sparse, head_offset)
        + w.colbert * head(colbert, head_offset)
    ) / w.unified_norm
    if not sd:
        return big_l
    students = [(w.distill_dense, local), (w.distill_sparse, local_s), (w.distill_colbert, local_c)]
    teacher_scores = inter.detach()
    if not in_batch:
        students = [(lam, own_groups(s, group)) for lam, s in students]
        teacher_scores = own_groups(teacher_scores, group)
    l_prime = sum(lam * naive_soft_ce(s, teacher_scores, tau) for lam, s in students) / w.distill_norm
    return (big_l + l_prime) / w.final_norm


# ------------------------------------------------------------------------------------------- helpers
def scores(rows, cols, seed, scale=1.0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(rows, cols, generator=g, dtype=torch.float64)).requires_grad_(requires_grad)


def check(fn, ref, inputs, atol=1e-9):
    """Same value and same gradient w.r.t. every input that requires grad."""
    out, want = fn(*inputs), ref(*inputs)
    torch.testing.assert_close(out, torch.as_tensor(want, dtype=out.dtype), atol=atol, rtol=1e-7)
    leaves = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
    got_g = torch.autograd.grad(out, leaves)
    want_g = torch.autograd.grad(want, leaves)
    for g, r in zip(got_g, want_g, strict=True):
        torch.testing.assert_close(g, r, atol=atol, rtol=1e-7)


# ------------------------------------------------------------------------------------------- InfoNCE
@pytest.mark.parametrize("group", [1, 3])
@pytest.mark.parametrize("in_batch", [True, False])
def test_info_nce_matches_naive(group, in_batch):
    s = scores(4, 4 * group, seed=group)
    check(
        lambda x: info_nce(x, group, temperature=TAU, in_batch_negatives=in_batch),
        lambda x: naive_info_nce(x, group, TAU, 0, in_batch),
        (s,),
    )


def test_info_nce_cross_device_offset_uses_the_right_targets():
    world, rank, b, g = 3, 1, 2, 4
    s = scores(b, world * b * g, seed=5)
    check(
        lambda x: info_nce(x, g, temperature=TAU, query_offset=rank * b),
        lambda x: naive_info_nce(x, g, TAU, rank * b),
        (s,),
    )


def test_info_nce_group_size_one_without_in_batch_is_zero():
    s = scores(3, 3, seed=2)
    assert info_nce(s, 1, temperature=TAU, in_batch_negatives=False).item() == 0.0


# ------------------------------------------------------------------------------------------- teacher KD
def test_teacher_distribution_casts_integers_and_checks_shape():
    teacher = teacher_distribution(torch.tensor([[3, 1, 0]]), 1, 3)
    expected = torch.softmax(torch.tensor([[3.0, 1.0, 0.0]]), -1)
    torch.testing.assert_close(teacher, expected)
    with pytest.raises(ValueError, match=r"teacher_scores must be \(B, G\) = \(2, 3\)"):
        teacher_distribution(torch.zeros(2, 4), 2, 3)


@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("in_batch", [True, False])
@pytest.mark.parametrize("offset", [0, 3])
def test_m3_kd_loss_matches_progressive_masking_loop(group, in_batch, offset):
    b = 3
    s = scores(b, (offset + b + 1) * group, seed=7 + group)  # a gathered matrix with one more rank's queries
    teacher = teacher_distribution(scores(b, group, seed=99, scale=2.0, requires_grad=False), b, group)
    check(
        lambda x: m3_kd_loss(
            x, teacher, group, temperature=TAU, query_offset=offset, in_batch_negatives=in_batch
        ),
        lambda x: naive_m3_kd(x, teacher, group, TAU, offset, in_batch),
        (s,),
    )


@pytest.mark.parametrize("in_batch", [True, False])
def test_kl_div_loss_matches_naive(in_batch):
    b, group = 3, 4
    s = scores(b, b * group, seed=11)
    teacher = teacher_distribution(scores(b, group, seed=12, requires_grad=False), b, group)
    check(
        lambda x: kl_div_loss(x, teacher, group, temperature=TAU, in_batch_negatives=in_batch),
        lambda x: naive_kl_div(x, teacher, group, TAU, 0, in_batch),
        (s,),
    )


# ------------------------------------------------------------------------------------------- self-distillation
def test_self_distill_matches_naive_and_blocks_teacher_gradient():
    student, teacher = scores(3, 6, seed=13), scores(3, 6, seed=14)
    out = self_distill_loss(student, teacher, temperature=TAU)
    ref = naive_soft_ce(student, teacher.detach(), TAU)
    torch.testing.assert_close(out, ref, atol=1e-9, rtol=1e-7)
    g_student, g_teacher = torch.autograd.grad(out, [student, teacher], allow_unused=True)
    torch.testing.assert_close(g_student, torch.autograd.grad(ref, student)[0])
    assert g_teacher is None  # the teacher is detached


# ------------------------------------------------------------------------------------------- unified loss
UNIFIED_CASES = [
    dict(group=4),
    dict(group=1),
    dict(group=3, sd=False),
    dict(group=3, teacher=True, kd="m3_kd_loss"),
    dict(group=3, teacher=True, kd="kl_div"),
    dict(group=3, in_batch=False),
    dict(group=3, in_batch=False, teacher=True, kd="m3_kd_loss"),
    dict(group=2, offset=2, world=3),
    dict(group=2, offset=2, world=3, gathered_heads=True),
    dict(group=2, offset=1, world=2, gathered_heads=True, teacher=True, kd="kl_div"),
    dict(group=3, weights="paper_v2"),
    dict(group=2, weights={"sparse": 0.5, "ensemble_colbert": 2.0, "final_norm": 3.0}),
]


@pytest.mark.parametrize("case", UNIFIED_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_m3_loss_matches_naive(case):
    b, group = 3, case["group"]
    offset, world = case.get("offset", 0), case.get("world", 1)
    dense = scores(b, world * b * group, seed=20)
    head_cols = (world if case.get("gathered_heads") else 1) * b * group  # sparse/ColBERT local or gathered
    sparse = scores(b, head_cols, seed=21, scale=3.0).abs().detach().requires_grad_(True)  # lexical: >= 0
    colbert = scores(b, head_cols, seed=22)
    teacher_raw = torch.randint(0, 100, (b, group)) if case.get("teacher") else None  # integer scores cast
    teacher = None if teacher_raw is None else teacher_distribution(teacher_raw, b, group)
    weights = M3LossWeights.coerce(case.get("weights"))
    options = dict(
        temperature=TAU,
        self_distill=case.get("sd", True),
        teacher_scores=teacher_raw,
        kd_loss=case.get("kd", "m3_kd_loss"),
        query_offset=offset,
        in_batch_negatives=case.get("in_batch", True),
    )

    def ours(d, s, c):
        return m3_loss(d, s, c, group, weights=case.get("weights"), **options).loss

    def reference(d, s, c):
        return naive_m3(
            d,
            s,
            c,
            group,
            TAU,
            weights,
            teacher=teacher,
            kd=options["kd_loss"],
            offset=offset,
            in_batch=options["in_batch_negatives"],
            sd=options["self_distill"],
        )

    check(ours, reference, (dense, sparse, colbert))


def test_m3_loss_default_weights_are_the_reference_numbers():
    w = M3LossWeights()
    assert (w.ensemble_dense, w.ensemble_sparse, w.ensemble_colbert) == (1.0, 0.3, 1.0)
    assert (w.dense, w.inter, w.sparse, w.colbert, w.unified_norm) == (1.0, 1.0, 0.1, 1.0, 4.0)
    assert (w.distill_dense, w.distill_sparse, w.distill_colbert, w.distill_norm, w.final_norm) == (
        1,
        0.1,
        1,
        3,
        2,
    )
    v2 = M3LossWeights.paper_v2()
    assert (v2.ensemble_sparse, v2.sparse, v2.distill_sparse, v2.unified_norm, v2.final_norm) == (
        1,
        1,
        1,
        1,
        1,
    )


def test_m3_loss_parts_and_dense_only_mode():
    b, group = 2, 3
    dense, sparse, colbert = scores(b, b * group, 1), scores(b, b * group, 2), scores(b, b * group, 3)
    out = m3_loss(dense, sparse, colbert, group, temperature=TAU)
    assert set(out.parts) == {"dense", "sparse", "colbert", "inter", "self_distill"}
    assert all(p.dim() == 0 and not p.requires_grad for p in out.parts.values())
    torch.testing.assert_close(out.parts["dense"], naive_info_nce(dense, group, TAU).detach())
    stage1 = m3_loss(dense, None, None, group, temperature=TAU)  # self_distill=True is ignored: no ensemble
    assert set(stage1.parts) == {"dense"}
    torch.testing.assert_close(stage1.loss, naive_info_nce(dense, group, TAU))
    no_sd = m3_loss(dense, sparse, colbert, group, temperature=TAU, self_distill=False)
    assert "self_distill" not in no_sd.parts


def test_m3_loss_bad_inputs():
    d = scores(2, 6, 1)
    with pytest.raises(ValueError, match="group_size=4 does not divide the 6 passage columns"):
        m3_loss(d, None, None, 4)
    with pytest.raises(ValueError, match=r"sparse scores must be the local \(B, B\*G\) = \(2, 6\) matrix"):
        m3_loss(d, scores(2, 5, 2), scores(2, 6, 3), 3)
    with pytest.raises(ValueError, match="no score matrix given"):
        m3_loss(None, None, None, 3)
    with pytest.raises(ValueError, match="colbert scores have 1 query rows, sparse has 2"):
        m3_loss(None, scores(2, 6, 2), scores(1, 3, 3), 3)
    with pytest.raises(ValueError, match=r"teacher_scores must be \(B, G\)"):
        m3_loss(d, None, None, 3, teacher_scores=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="query_offset=1 need 9 passage columns"):
        m3_loss(d, None, None, 3, query_offset=1)
    with pytest.raises(ValueError, match="unknown kd_loss"):
        m3_loss(d, None, None, 3, kd_loss="mse")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        m3_loss(d, None, None, 3, temperature=0.0)
    with pytest.raises(ValueError, match="2-D"):
        m3_loss(d[0], None, None, 3)
    with pytest.raises(ValueError, match="unknown loss weight"):
        m3_loss(d, None, None, 3, weights={"lexical": 1.0})
