"""m3lit.model.packing: a padding-free pass gives the padded pass's hidden states and gradients (BERT- and
RoBERTa-style position ids), replays its dropout under gradient checkpointing, and is used only where it
applies."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig

from m3lit.model import M3Model
from m3lit.model.cpu_dropout import use_fast_cpu_dropout
from m3lit.model.packing import PackedLayout, can_pack, padded_position_ids

LENGTHS = [9, 3, 14, 1, 6]


def _batch(tokenizer, vocab: int, seed: int = 0):
    """(5, 14) right-padded ids of LENGTHS real tokens, and their 0/1 mask."""
    generator = torch.Generator().manual_seed(seed)
    length = max(LENGTHS)
    ids = torch.full((len(LENGTHS), length), tokenizer.pad_token_id)
    mask = torch.zeros(len(LENGTHS), length, dtype=torch.long)
    for row, n in enumerate(LENGTHS):
        ids[row, :n] = torch.randint(5, vocab, (n,), generator=generator)
        mask[row, :n] = 1
    return ids, mask


def _bert_config(tiny_config) -> BertConfig:
    return BertConfig(
        vocab_size=tiny_config.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=tiny_config.pad_token_id,
    )  # fmt: skip


@pytest.fixture(params=["xlm-roberta", "bert"])
def model(request, tiny_config, tokenizer) -> M3Model:
    torch.manual_seed(0)
    # a copy: switching the attention function writes to the config, which other tests share
    config = copy.deepcopy(tiny_config) if request.param == "xlm-roberta" else _bert_config(tiny_config)
    model = M3Model.from_config(config, tokenizer, colbert_dim=16)
    use_fast_cpu_dropout(model.encoder)
    return model


def _hidden(model: M3Model, ids, mask, padding_free: bool) -> torch.Tensor:
    model.padding_free = padding_free
    return model.encode_hidden(ids, mask)


def test_layout_gathers_and_scatters_the_real_rows():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    x = torch.arange(3 * 4 * 2, dtype=torch.float32).reshape(3, 4, 2)
    layout = PackedLayout.of(mask)
    expected = torch.stack([x[b, i] for b in range(3) for i in range(4) if mask[b, i]])[None]
    assert layout.tokens == 7 and torch.equal(layout.gather(x), expected)
    assert torch.equal(layout.scatter(expected), x * mask[..., None])
    heads = torch.randn(1, 3, 7, 5)  # (1, heads, N, d)
    padded = layout.heads_to_padded(heads)
    assert padded.shape == (3, 3, 4, 5) and torch.equal(padded[0, :, 1], heads[0, :, 1])
    assert torch.equal(padded[2, :, 1:], torch.zeros(3, 3, 5))
    assert torch.equal(layout.key_mask.squeeze(), mask.bool())


def test_position_ids_are_the_ones_the_padded_pass_uses(model, tokenizer):
    ids, mask = _batch(tokenizer, model.encoder.config.vocab_size)
    embeddings = model.encoder.embeddings
    positions = padded_position_ids(model.encoder, ids)
    if model.encoder.config.model_type == "bert":
        expected = torch.arange(ids.shape[1]).expand_as(ids)
    else:
        expected = embeddings.create_position_ids_from_input_ids(ids, embeddings.padding_idx)
    assert torch.equal(positions, expected)


def test_eval_hidden_states_equal_the_padded_pass(model, tokenizer):
    ids, mask = _batch(tokenizer, model.encoder.config.vocab_size)
    model.eval()
    padded = _hidden(model, ids, mask, padding_free=False)
    packed = _hidden(model, ids, mask, padding_free=True)
    real = mask.bool()
    torch.testing.assert_close(packed[real], padded[real], rtol=1e-5, atol=1e-6)
    assert torch.equal(packed[~real], torch.zeros_like(packed[~real]))


def test_training_gradients_equal_the_padded_pass_without_dropout(model, tokenizer):
    ids, mask = _batch(tokenizer, model.encoder.config.vocab_size)
    for module in model.modules():  # dropout off: both passes are then the same function of the weights
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.encoder.config.attention_probs_dropout_prob = 0.0
    for layer in model.encoder.encoder.layer:
        layer.attention.self.dropout_prob = 0.0
    model.train()
    weight = torch.randn(*ids.shape, model.hidden_size)
    grads = []
    for padding_free in (False, True):
        hidden = _hidden(model, ids, mask, padding_free)
        params = [p for p in model.encoder.parameters() if p.requires_grad]
        grads.append(torch.autograd.grad((hidden * weight * mask[..., None]).sum(), params))
    for padded, packed in zip(*grads, strict=True):
        torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-5)


def test_dropout_is_seeded_and_replayed_by_gradient_checkpointing(model, tokenizer):
    ids, mask = _batch(tokenizer, model.encoder.config.vocab_size)
    model.train()
    weight = torch.randn(*ids.shape, model.hidden_size)
    runs = []
    for checkpointing in (False, True, True):
        model.gradient_checkpointing(checkpointing)
        torch.manual_seed(7)
        hidden = _hidden(model, ids, mask, padding_free=True)
        params = [p for p in model.encoder.parameters() if p.requires_grad]
        runs.append((hidden.detach(), torch.autograd.grad((hidden * weight).sum(), params)))
    model.gradient_checkpointing(False)
    torch.manual_seed(8)
    other = _hidden(model, ids, mask, padding_free=True).detach()
    assert not torch.equal(other, runs[0][0])  # dropout is on: another seed, other masks
    for hidden, grads in runs[1:]:
        torch.testing.assert_close(hidden, runs[0][0], rtol=0, atol=0)
        for got, expected in zip(grads, runs[0][1], strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_used_only_where_it_applies(model, tokenizer, tiny_config):
    ids, mask = _batch(tokenizer, model.encoder.config.vocab_size)
    assert can_pack(model.encoder, mask)
    assert not can_pack(model.encoder, torch.ones_like(mask))  # nothing to drop
    assert not can_pack(model.encoder, mask.bool()[:, None, None, :])  # a prepared 4-D mask
    assert not can_pack(model.encoder, None)
    plain = M3Model.from_config(copy.deepcopy(tiny_config), tokenizer, colbert_dim=16)  # transformers' SDPA
    assert not can_pack(plain.encoder, mask)
    calls = []
    model.encoder.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape),
                                            with_kwargs=True)  # fmt: skip
    _hidden(model, ids, mask, padding_free=False)
    _hidden(model, ids, mask, padding_free=True)
    assert calls == [ids.shape, (1, sum(LENGTHS))]
