"""Heads à la carte: a stage trains any subset of {dense, sparse, colbert} (+ self-distillation).

The restricted loss is checked against a direct float64 computation of the rule stated in
:func:`m3lit.losses.m3_loss` (loss and gradients, every subset, with and without self-distillation); real
Trainer runs check that the unchosen heads stay bit for bit as they started, through the export too.
"""

from __future__ import annotations

import itertools

import lightning as L
import pytest
import torch
from test_losses import naive_info_nce, naive_soft_ce
from train_utils import tiny_corpus, tiny_run_overrides

from m3lit.config.compose import compose
from m3lit.losses import m3_loss
from m3lit.model import M3Model
from m3lit.train import train
from m3lit.training.stages import STAGES, StageSpec, parse_schedule, stage_name, stage_spec

TAU = 0.05
HEADS = ("dense", "sparse", "colbert")
SUBSETS = [c for k in (1, 2, 3) for c in itertools.combinations(HEADS, k)]
ENSEMBLE = {"dense": 1.0, "sparse": 0.3, "colbert": 1.0}  # w of Eq. (2), reference code
LAMBDA = {"dense": 1.0, "sparse": 0.1, "colbert": 1.0}  # l_x of L and l'_x of L' (reference code)


def naive_subset_loss(scores: dict[str, torch.Tensor], group: int, self_distill: bool) -> torch.Tensor:
    """The rule of m3_loss's docstring, written out: float64, explicit sums."""
    if len(scores) == 1:
        (s,) = scores.values()
        return naive_info_nce(s, group, TAU)
    c = sum(ENSEMBLE.values()) / sum(ENSEMBLE[h] for h in scores)
    inter = sum(ENSEMBLE[h] * c * s for h, s in scores.items())
    unified = sum(LAMBDA[h] * naive_info_nce(s, group, TAU) for h, s in scores.items())
    unified = (unified + naive_info_nce(inter, group, TAU)) / (len(scores) + 1)  # n_L = 4 (k + 1) / 4
    if not self_distill:
        return unified
    teacher = inter.detach()
    distill = sum(LAMBDA[h] * naive_soft_ce(s, teacher, TAU) for h, s in scores.items()) / len(scores)
    return (unified + distill) / 2


@pytest.mark.parametrize("self_distill", [False, True])
@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_subset_loss_and_gradients_match_naive(subset, self_distill):
    B, G = 3, 2
    gen = torch.Generator().manual_seed(len(subset) * 10 + self_distill)
    raw = {h: torch.randn(B, B * G, generator=gen, dtype=torch.float64) for h in HEADS}
    raw["sparse"] = raw["sparse"].abs()
    leaves = {h: raw[h].clone().requires_grad_(True) for h in subset}
    out = m3_loss(*(leaves.get(h) for h in HEADS), G, temperature=TAU, self_distill=self_distill)
    ref_leaves = {h: raw[h].clone().requires_grad_(True) for h in subset}
    ref = naive_subset_loss(ref_leaves, G, self_distill)
    torch.testing.assert_close(out.loss, ref, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(out.loss, list(leaves.values()))
    ref_grads = torch.autograd.grad(ref, list(ref_leaves.values()))
    for h, g, r in zip(subset, grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12, msg=f"gradient of {h}")
        assert g.abs().sum() > 0
    extra = {"inter", "self_distill"} if self_distill else {"inter"}
    assert set(out.parts) == set(subset) | (extra if len(subset) > 1 else set())


def test_full_set_reproduces_the_reference_numbers_bit_for_bit():
    """All three heads: the explicit reference formula (w = (1, 0.3, 1), /4, /3, /2) with no rescaling."""
    B, G = 2, 3
    gen = torch.Generator().manual_seed(5)
    d, s, c = (torch.randn(B, B * G, generator=gen) for _ in range(3))
    out = m3_loss(d, s, c, G, temperature=TAU)
    inter = d + 0.3 * s + c
    assert torch.equal(out.parts["inter"], m3_loss(inter, None, None, G, temperature=TAU).loss)
    assert torch.equal(out.parts["sparse"], m3_loss(None, s, None, G, temperature=TAU).loss)
    expected = (
        out.parts["dense"] + out.parts["inter"] + 0.1 * out.parts["sparse"] + out.parts["colbert"]
    ) / 4
    expected = (expected + out.parts["self_distill"]) / 2
    assert torch.equal(out.loss, expected)


def test_stage_forms_and_errors():
    assert stage_spec({"heads": ["dense"]}) == STAGES["dense"]
    assert (
        stage_name({"heads": ["colbert", "dense", "sparse"], "self_distill": True}) == "unified_self_distill"
    )
    assert stage_spec("sparse+colbert") == StageSpec(
        dense=False, sparse=True, colbert=True, self_distill=False
    )
    assert stage_spec("dense+colbert+self_distill").heads == ("dense", "colbert")
    for bad, message in [
        ({"heads": []}, "at least one head"),
        ({"heads": ["dense", "lexical"]}, r"unknown head\(s\) \['lexical'\]"),
        ({"heads": ["sparse"], "self_distill": True}, "self_distill needs at least two heads"),
        ({"heads": ["dense", "dense"]}, "given twice"),
        ({"heads": "dense"}, "must be a list"),
        ({"head": ["dense"]}, "needs 'heads'"),
        ("dense+lexical", "unknown head"),
        ("stage2", "unknown training stage"),
    ]:
        with pytest.raises(ValueError, match=message):
            stage_spec(bad)
    entries = parse_schedule(
        {
            0: {"heads": ["dense", "sparse"], "source": "labelled"},
            5: {"heads": ["dense", "sparse"], "self_distill": True},
        }
    )
    assert [(e.step, e.stage, e.source) for e in entries] == [
        (0, "dense+sparse", "labelled"),
        (5, "dense+sparse+self_distill", None),
    ]
    with pytest.raises(ValueError, match="entry 0 must be"):
        parse_schedule({0: {"stage": "dense", "heads": ["dense"]}})
    with pytest.raises(ValueError, match=r"entry 3: stage heads: unknown head"):
        parse_schedule({0: "dense", 3: {"heads": ["colbrt"]}})


# ------------------------------------------------------------------------------------ real training runs
class WeightRecorder(L.Callback):
    """Copies every parameter at the start and the end of fitting (and records the heads computed)."""

    def on_train_start(self, trainer, pl_module):
        self.before = {k: v.detach().clone() for k, v in pl_module.model.named_parameters()}

    def on_train_end(self, trainer, pl_module):
        self.after = {k: v.detach().clone() for k, v in pl_module.model.named_parameters()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tokenizer):
    return tiny_corpus(tmp_path_factory.mktemp("corpus"), tokenizer)


def _changed(rec: WeightRecorder, prefix: str) -> list[bool]:
    return [not torch.equal(rec.before[k], rec.after[k]) for k in rec.before if k.startswith(prefix)]


@pytest.mark.parametrize(
    ("stage", "extra", "trained", "untouched"),
    [
        (
            "{heads:[dense,sparse],self_distill:true}",
            ["model.sub_batch_mode=split"],
            ["encoder", "sparse_head"],
            ["colbert_head"],
        ),
        (
            "{heads:[colbert]}",
            ["model.sub_batch_mode=gradcache", "data.sub_batch_size=2"],
            ["encoder", "colbert_head"],
            ["sparse_head"],
        ),
        ("{heads:[sparse]}", ["model.net.fix_encoder=true"], ["sparse_head"], ["encoder", "colbert_head"]),
    ],
    ids=["dense+sparse+sd", "colbert-gradcache", "sparse-frozen-encoder"],
)
def test_unchosen_heads_stay_bit_identical_through_training_and_export(
    corpus, tmp_path, stage, extra, trained, untouched
):
    cfg = compose(
        tiny_run_overrides(
            corpus,
            tmp_path / "run",
            "trainer.max_steps=3",
            "~callbacks.stage_switch",
            "data.source=labelled",
            f"model.stage={stage}",
            "model.optimizer.lr=1e-3",
            "model.optimizer.weight_decay=0.1",  # a decay step would move the untouched heads
            "+callbacks.weights._target_=test_heads.WeightRecorder",
            *extra,
        )
    )
    _, objects = train(cfg)
    rec = next(c for c in objects["callbacks"] if isinstance(c, WeightRecorder))
    for prefix in trained:
        assert any(_changed(rec, prefix)), f"{prefix} did not train"
    for prefix in untouched:
        assert not any(_changed(rec, prefix)), f"{prefix} moved although its head is not in the stage"
    exported = M3Model.from_pretrained(objects["export_dir"])
    for name in ("sparse_head", "colbert_head"):
        if name in untouched:
            for key, value in getattr(exported, name).state_dict().items():
                assert torch.equal(value, rec.before[f"{name}.{key}"]), f"exported {name}.{key} differs"
