"""Sub-batching: the split-batch step and the exact gradient cache equal the plain full-batch step.

The reference is the plain step: every sub-batch encoded with graph, the loss of the concatenated
representations, one ``backward`` through autograd. Both sub-batching modes must reproduce its loss and
every parameter gradient, with dropout on (the gradient cache replays each sub-batch's RNG state), and
the gradient cache must keep only one sub-batch's activations alive.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

from m3lit.data.batch import Encoded
from m3lit.model import M3Model
from m3lit.model.cpu_dropout import use_fast_cpu_dropout
from m3lit.model.tiny import tiny_xlmr_config
from m3lit.training.gradcache import RngState, gradcache_step, split_batch_step
from m3lit.training.objective import m3_objective
from m3lit.training.stages import stage_spec

B, G = 4, 3


def _encode(tokenizer, texts, max_length):
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return Encoded(enc["input_ids"], enc["attention_mask"])


def _subs(tokenizer, texts, size, max_length):
    return [_encode(tokenizer, texts[i : i + size], max_length) for i in range(0, len(texts), size)]


def _model(tokenizer, dropout: float, fast_dropout: bool = False) -> M3Model:
    config = tiny_xlmr_config(
        len(tokenizer),
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_length=64,
        dropout=dropout,
    )
    torch.manual_seed(0)
    model = M3Model.from_config(config, tokenizer, colbert_dim=16).train()
    if fast_dropout:
        use_fast_cpu_dropout(model.encoder)
    return model


def _step(
    mode, tokenizer, texts, *, stage, q_size, p_size, dropout=0.1, teacher=None, ckpt=False, fast=False
):
    """One step in ``mode`` on fresh (identically seeded) weights -> (loss, parts, {name: grad}).
    ``fast``: m3lit's CPU dropout (:mod:`m3lit.model.cpu_dropout`) instead of PyTorch's."""
    model = _model(tokenizer, dropout, fast)
    model.gradient_checkpointing(ckpt)
    queries = _subs(tokenizer, texts[:B], q_size, 24)
    passages = _subs(tokenizer, texts[B : B + B * G], p_size, 40)
    spec = stage_spec(stage)
    loss_fn = partial(m3_objective, group_size=G, stage=spec, teacher_scores=teacher)
    heads = {"dense": True, "sparse": spec.sparse, "colbert": spec.colbert}
    torch.manual_seed(1234)  # same dropout stream for every mode
    step = gradcache_step if mode == "gradcache" else split_batch_step
    out = step(
        model,
        queries,
        passages,
        heads=heads,
        loss_fn=loss_fn,
        backward=lambda loss: loss.backward(),
        pad_token_id=1,
    )
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), {k: v.detach() for k, v in out.parts.items()}, grads


def _assert_same(ref, other):
    loss, parts, grads = other
    torch.testing.assert_close(loss, ref[0], rtol=1e-6, atol=1e-6)
    assert parts.keys() == ref[1].keys()
    for key in parts:
        torch.testing.assert_close(parts[key], ref[1][key], rtol=1e-6, atol=1e-6)
    assert grads.keys() == ref[2].keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref[2][name], rtol=1e-4, atol=2e-6, msg=name)


@pytest.mark.parametrize("fast", [False, True], ids=["torch-dropout", "fast-cpu-dropout"])
@pytest.mark.parametrize("stage", ["dense", "unified", "unified_self_distill"])
def test_split_and_gradcache_equal_plain_step_with_dropout(tokenizer, texts, stage, fast):
    texts = texts * 2
    ref = _step("plain", tokenizer, texts, stage=stage, q_size=2, p_size=5, fast=fast)
    assert ref[2], "the plain step produced no gradients"
    assert any(g.abs().sum() > 0 for g in ref[2].values())
    _assert_same(ref, _step("split", tokenizer, texts, stage=stage, q_size=2, p_size=5, ckpt=True, fast=fast))
    _assert_same(ref, _step("gradcache", tokenizer, texts, stage=stage, q_size=2, p_size=5, fast=fast))
    heads = {n.split(".")[0] for n in ref[2]}
    assert ("sparse_head" in heads) == (stage != "dense") and ("colbert_head" in heads) == (stage != "dense")


def test_gradcache_with_teacher_scores(tokenizer, texts):
    teacher = torch.tensor([[9.0, 7.0, 1.0], [8.0, 8.5, 2.0], [5.0, 1.0, 0.0], [3.0, 2.0, 2.5]])
    texts = texts * 2
    ref = _step("plain", tokenizer, texts, stage="unified_self_distill", q_size=1, p_size=2, teacher=teacher)
    _assert_same(
        ref,
        _step(
            "gradcache", tokenizer, texts, stage="unified_self_distill", q_size=1, p_size=2, teacher=teacher
        ),
    )


def test_sub_batches_equal_one_full_batch_without_dropout(tokenizer, texts):
    """Sub-batches padded to their own lengths give the one-batch loss and gradients (dropout off)."""
    texts = texts * 2
    full = _step("plain", tokenizer, texts, stage="unified_self_distill", q_size=B, p_size=B * G, dropout=0.0)
    for mode, ckpt in (("split", True), ("gradcache", False)):
        other = _step(
            mode, tokenizer, texts, stage="unified_self_distill", q_size=1, p_size=4, dropout=0.0, ckpt=ckpt
        )
        _assert_same(full, other)


def test_rng_state_replays_dropout():
    state = RngState.capture(torch.device("cpu"))
    first = torch.nn.functional.dropout(torch.ones(64), 0.5)
    after = torch.get_rng_state()
    with state.replay():
        again = torch.nn.functional.dropout(torch.ones(64), 0.5)
    assert torch.equal(first, again)
    assert torch.equal(torch.get_rng_state(), after), "replay must not disturb the surrounding RNG stream"


def test_only_the_last_backward_syncs(tokenizer, texts):
    """Under DDP every backward but the last runs inside no_sync (one all-reduce per step)."""
    texts = texts * 2
    model = _model(tokenizer, 0.1)
    inside = []
    flag = {"on": False}

    class NoSync:
        def __enter__(self):
            flag["on"] = True

        def __exit__(self, *exc):
            flag["on"] = False

    def backward(loss):
        inside.append(flag["on"])
        loss.backward()

    spec = stage_spec("unified")
    gradcache_step(
        model,
        _subs(tokenizer, texts[:B], 2, 24),
        _subs(tokenizer, texts[B : B + B * G], 4, 40),
        heads={"dense": True, "sparse": True, "colbert": True},
        loss_fn=partial(m3_objective, group_size=G, stage=spec),
        backward=backward,
        pad_token_id=1,
        no_sync=NoSync,
    )
    assert inside == [True] * 4 + [False]  # 2 query + 3 passage sub-batches


class SavedActivations:
    """Counts the bytes of tensors that the model's forward saves for backward and are still alive.

    A ``saved_tensors_hooks`` context is entered for the duration of every ``M3Model.forward`` call; each
    packed tensor is wrapped in a holder whose destruction (when autograd frees the graph) releases its
    bytes. Parameters are not activations and are not counted.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.live = 0
        self.peak = 0
        self._ctx = []
        model.register_forward_pre_hook(self._enter)
        model.register_forward_hook(self._exit)

    def _enter(self, module, args):
        ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        ctx.__enter__()
        self._ctx.append(ctx)

    def _exit(self, module, args, output):
        self._ctx.pop().__exit__(None, None, None)

    def _pack(self, tensor):
        counter = self

        class Holder:
            def __init__(self, t):
                self.t = t
                self.nbytes = (
                    0 if t.untyped_storage().data_ptr() in counter.params else t.numel() * t.element_size()
                )
                counter.live += self.nbytes
                counter.peak = max(counter.peak, counter.live)

            def __del__(self):
                counter.live -= self.nbytes

        return Holder(tensor)

    @staticmethod
    def _unpack(holder):
        return holder.t


def _peak(mode, tokenizer, texts, n_queries):
    model = _model(tokenizer, 0.1)
    counter = SavedActivations(model)
    queries = _subs(tokenizer, [texts[i % len(texts)] for i in range(n_queries)], 4, 24)
    passages = _subs(tokenizer, [texts[(i + 7) % len(texts)] for i in range(n_queries * G)], 4, 24)
    step = gradcache_step if mode == "gradcache" else split_batch_step
    spec = stage_spec("unified_self_distill")
    step(
        model,
        queries,
        passages,
        heads={"dense": True, "sparse": True, "colbert": True},
        loss_fn=partial(m3_objective, group_size=G, stage=spec),
        backward=lambda loss: loss.backward(),
        pad_token_id=1,
    )
    assert counter.live == 0, "activations outlived the step"
    return counter.peak


def test_gradcache_activation_memory_does_not_grow_with_batch(tokenizer):
    # equal-length texts, so every sub-batch of 4 has the same shape whatever the batch size
    texts = [" ".join(["lorem ipsum dolor sit amet"] * 6)] * 4 + [
        " ".join(["consectetur adipiscing elit"] * 8)
    ] * 4
    gradcache = [_peak("gradcache", tokenizer, texts, n) for n in (4, 8, 16)]
    plain = [_peak("split", tokenizer, texts, n) for n in (4, 8, 16)]
    assert gradcache[0] > 0
    assert gradcache[0] == gradcache[1] == gradcache[2], gradcache  # one sub-batch alive at a time
    assert plain[1] > 1.8 * plain[0] and plain[2] > 1.8 * plain[1], plain  # grows linearly without the cache
    assert plain[2] > 10 * gradcache[2]


def test_gradcache_frees_the_stage2_representations_before_re_encoding(tokenizer, texts):
    """Stage 3 runs without the concatenated (B*G, L, Dc) representations of stage 2 (nor the loss graph);
    the returned loss is detached."""
    import weakref

    texts = texts * 2
    model = _model(tokenizer, 0.1)
    spec = stage_spec("unified_self_distill")
    refs = []

    def loss_fn(q, p):
        refs.extend(weakref.ref(getattr(side, name)) for side in (q, p) for name in ("dense", "colbert"))
        return m3_objective(q, p, group_size=G, stage=spec)

    alive_at_backward = []

    def backward(loss):
        alive_at_backward.append(sum(ref() is not None for ref in refs))
        loss.backward()

    out = gradcache_step(
        model,
        _subs(tokenizer, texts[:B], 2, 24),
        _subs(tokenizer, texts[B : B + B * G], 4, 40),
        heads={"dense": True, "sparse": True, "colbert": True},
        loss_fn=loss_fn,
        backward=backward,
        pad_token_id=1,
    )
    assert len(refs) == 4 and alive_at_backward == [0] * 5  # 2 query + 3 passage sub-batches
    assert out.loss.grad_fn is None and torch.isfinite(out.loss)
