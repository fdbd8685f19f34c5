"""M3LitModule pieces: optimiser groups, the learning-rate schedule, option validation, sub-batch
re-chunking, padding of concatenated representations and the per-step dropout seed."""

from __future__ import annotations

import math

import pytest
import torch

from m3lit.data.batch import Encoded
from m3lit.model import M3Output
from m3lit.scores import colbert_scores, sparse_scores
from m3lit.training.lit_module import M3LitModule, split_encoded
from m3lit.training.optim import (
    OptimizerConfig,
    SchedulerConfig,
    from_mapping,
    lr_lambda,
    param_groups,
    warmup_steps_for,
)
from m3lit.training.reps import concat_outputs


def test_param_groups_split_decay_and_skip_frozen(tiny_model):
    tiny_model.freeze(fix_position_embedding=True)
    groups = param_groups(tiny_model, weight_decay=0.01)
    decay, plain = groups
    assert decay["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    plain_names = {names[id(p)] for p in plain["params"]}
    assert all(n.endswith("bias") or "LayerNorm.weight" in n for n in plain_names)
    assert not any(n.endswith("bias") or "LayerNorm" in n for n in decay_names)
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert decay_names | plain_names == trainable and not decay_names & plain_names
    assert not any("position_embeddings" in n for n in trainable)


def test_head_lr_scale_gives_the_heads_their_own_rate_and_steps_them_accordingly(tiny_model):
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    groups = param_groups(tiny_model, weight_decay=0.01, head_lr=2e-3)
    head_groups = [g for g in groups if "lr" in g]
    head_names = {names[id(p)] for g in head_groups for p in g["params"]}
    assert head_names == {
        "sparse_head.linear.weight",
        "sparse_head.linear.bias",
        "colbert_head.linear.weight",
        "colbert_head.linear.bias",
    }
    assert {g["weight_decay"] for g in head_groups} == {0.01, 0.0}
    others = {names[id(p)] for g in groups if "lr" not in g for p in g["params"]}
    assert not others & head_names and others | head_names == set(names.values())
    # one AdamW step: the first update is lr * sign(grad) (bias-corrected moments), so it shows each rate
    opt = torch.optim.AdamW(groups, lr=1e-5, weight_decay=0.0)
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    for p in tiny_model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    for n, p in tiny_model.named_parameters():
        expected = 2e-3 if n in head_names else 1e-5
        moved = (before[n] - p.detach()).abs().max().item()
        assert moved == pytest.approx(expected, rel=2e-2), n  # fp32 rounding of p - lr


def test_head_lr_scale_must_be_positive():
    with pytest.raises(ValueError, match="head_lr_scale"):
        from_mapping(OptimizerConfig, {"head_lr_scale": 0.0}, "model.optimizer")


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
def test_lr_schedule_matches_the_formula(name):
    warmup, total = 4, 20
    factor = lr_lambda(name, warmup, total)
    for step in range(total + 1):
        if step < warmup:
            expected = step / warmup
        elif name == "constant":
            expected = 1.0
        else:
            progress = (step - warmup) / (total - warmup)
            expected = 1 - progress if name == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        assert factor(step) == pytest.approx(expected, abs=1e-12), (name, step)


def test_warmup_steps():
    assert warmup_steps_for(1000, None, 0.1) == 100
    assert warmup_steps_for(1001, None, 0.1) == 101  # ceil, as the HF Trainer
    assert warmup_steps_for(1000, 7, 0.1) == 7
    with pytest.raises(ValueError, match="warmup_ratio"):
        warmup_steps_for(10, None, 1.5)


def test_optimizer_and_scheduler_built_from_config(tiny_model):
    module = M3LitModule(
        tiny_model,
        optimizer={"lr": 0.01, "weight_decay": 0.1, "betas": [0.8, 0.9]},
        scheduler={"total_steps": 10, "warmup_steps": 2},
    )
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.9)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx(
        [
            0.0,
            0.005,
            0.01,
            0.01 * 7 / 8,
            0.01 * 6 / 8,
            0.01 * 5 / 8,
            0.01 * 4 / 8,
            0.01 * 3 / 8,
            0.01 * 2 / 8,
            0.01 * 1 / 8,
        ]
    )
    assert config["lr_scheduler"]["interval"] == "step"


def test_options_are_validated(tiny_model):
    with pytest.raises(ValueError, match="model.optimizer: unknown option"):
        M3LitModule(tiny_model, optimizer={"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="sub_batch_mode"):
        M3LitModule(tiny_model, sub_batch_mode="cache")
    with pytest.raises(ValueError, match="unknown training stage"):
        M3LitModule(tiny_model, stage="stage2")
    module = M3LitModule(tiny_model)
    with pytest.raises(ValueError, match="unknown training stage"):
        module.stage = "unifed"
    assert from_mapping(SchedulerConfig, None, "x") == SchedulerConfig()
    assert from_mapping(OptimizerConfig, {"betas": [0.5, 0.6]}, "x").betas == (0.5, 0.6)


def test_hyperparameters_are_plain_data(tiny_model):
    module = M3LitModule(tiny_model, optimizer=OptimizerConfig(lr=0.5), loss={"temperature": 0.05})
    assert module.hparams["optimizer"] == {
        "lr": 0.5,
        "weight_decay": 0.01,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "head_lr_scale": 1.0,
    }
    assert module.hparams["loss"] == {"temperature": 0.05}


def test_split_encoded_rechunks_and_trims_padding():
    ids = torch.tensor([[0, 5, 6, 2, 1, 1], [0, 7, 2, 1, 1, 1], [0, 8, 9, 9, 9, 2], [0, 4, 2, 1, 1, 1]])
    mask = (ids != 1).long()
    chunks = split_encoded([Encoded(ids, mask)], 2)
    assert [tuple(c.input_ids.shape) for c in chunks] == [(2, 4), (2, 6)]  # each trimmed to its longest row
    assert torch.equal(chunks[0].input_ids, ids[:2, :4]) and torch.equal(chunks[1].attention_mask, mask[2:])
    assert split_encoded([Encoded(ids, mask)], None)[0].input_ids is ids
    with pytest.raises(ValueError, match="sub_batch_size"):
        split_encoded([Encoded(ids, mask)], 0)


def test_concatenated_sub_batches_score_like_the_parts():
    """Right-padding per-token outputs to a common length changes no sparse or ColBERT score."""
    gen = torch.Generator().manual_seed(0)

    def part(rows, length):
        ids = torch.randint(4, 20, (rows, length), generator=gen)
        weights = torch.rand(rows, length, generator=gen)
        vecs = torch.nn.functional.normalize(torch.randn(rows, length - 1, 6, generator=gen), dim=-1)
        return M3Output(
            sparse_weights=weights,
            token_ids=ids,
            colbert=vecs,
            colbert_mask=torch.ones(rows, length - 1, dtype=torch.bool),
        )

    a, b = part(2, 5), part(3, 9)
    q = part(2, 4)
    both = concat_outputs([a, b], pad_token_id=1)
    assert both.sparse_weights.shape == (5, 9) and both.colbert.shape == (5, 8, 6)
    for name, fn in (
        ("sparse", lambda p: sparse_scores(q.sparse_weights, q.token_ids, p.sparse_weights, p.token_ids)),
        ("colbert", lambda p: colbert_scores(q.colbert, q.colbert_mask, p.colbert, p.colbert_mask)),
    ):
        torch.testing.assert_close(fn(both), torch.cat([fn(a), fn(b)], dim=1), rtol=0, atol=1e-7, msg=name)


def test_step_seed_depends_on_seed_rank_and_step_only(tiny_model):
    module = M3LitModule(tiny_model, seed=3)
    other = M3LitModule(tiny_model, seed=4)
    assert module.step_seed() == M3LitModule(tiny_model, seed=3).step_seed()
    assert module.step_seed() != other.step_seed()
