"""M3Model: the three heads from their definitions, special ids from the tokenizer, padding invariance end to end,
freezing, gradient checkpointing, and position extension."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from m3lit.model import M3Model, extend_position_embeddings, special_token_ids
from m3lit.model.tiny import tiny_xlmr_config
from m3lit.model.tiny_tokenizer import wrap_xlmr_tokenizer
from m3lit.scores import colbert_scores, dense_scores, sparse_scores

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]  # ids 0..7: ordinary words


@pytest.fixture(scope="module")
def odd_tokenizer():
    """A tokenizer whose special tokens are NOT at ids 0..3: <s>=8, <pad>=9, </s>=10, <unk>=11, <mask>=12."""
    vocab = {w: i for i, w in enumerate([*WORDS, "<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 8), ("</s>", 10)]
    )
    return wrap_xlmr_tokenizer(backend)


def batch(tokenizer, texts, extra_padding=0):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if extra_padding:
        ids = torch.cat([ids, torch.full((len(texts), extra_padding), tokenizer.pad_token_id)], 1)
        mask = torch.cat([mask, torch.zeros(len(texts), extra_padding, dtype=mask.dtype)], 1)
    return ids, mask


# ------------------------------------------------------------------------------------------- heads
def test_special_ids_come_from_the_tokenizer(odd_tokenizer):
    assert special_token_ids(odd_tokenizer) == [8, 9, 10, 11]  # cls/bos, pad, eos/sep, unk; <mask> kept
    torch.manual_seed(0)
    config = tiny_xlmr_config(len(odd_tokenizer), pad_token_id=odd_tokenizer.pad_token_id, max_length=32)
    model = M3Model.from_config(config, odd_tokenizer, colbert_dim=8).eval()
    with torch.no_grad():
        model.sparse_head.linear.bias.fill_(10.0)  # ReLU never clips: every kept token weighs > 0
    ids, mask = batch(odd_tokenizer, ["alpha beta gamma delta", "beta unknownword <mask>"])
    assert {0, 1, 2, 3, 11, 12} <= set(ids.unique().tolist())  # words at 0..3, <unk>, <mask> all present
    out = model(ids, mask)
    hidden = model.encode_hidden(ids, mask)
    expected = torch.relu(model.sparse_head.linear(hidden)).squeeze(-1)
    dropped = torch.isin(ids, torch.tensor([8, 9, 10, 11]))
    torch.testing.assert_close(out.sparse_weights, expected * ~dropped)
    assert (out.sparse_weights[dropped] == 0).all()
    assert (out.sparse_weights[~dropped] > 0).all()  # ids 0..3 and <mask> are ordinary tokens here
    torch.testing.assert_close(out.token_ids, ids)


def test_dense_and_colbert_heads_follow_their_definitions(tiny_model, tokenizer, texts):
    model = tiny_model.eval()
    ids, mask = batch(tokenizer, texts[:4])
    out = model(ids, mask)
    hidden = model.encode_hidden(ids, mask)
    torch.testing.assert_close(out.dense, F.normalize(hidden[:, 0], dim=-1))
    assert out.colbert.shape == (4, ids.shape[1] - 1, 16)
    torch.testing.assert_close(out.colbert_mask, mask[:, 1:].bool())  # CLS dropped, EOS kept
    real = out.colbert_mask
    expected = F.normalize(model.colbert_head.linear(hidden[:, 1:]), dim=-1)
    torch.testing.assert_close(out.colbert[real], expected[real])
    assert (out.colbert[~real] == 0).all() and (~real).any()  # padding rows are exact zeros
    assert torch.linalg.vector_norm(out.colbert[real], dim=-1).sub(1).abs().max() < 1e-5


@pytest.mark.parametrize("colbert_dim", [0, -1])
def test_non_positive_colbert_dim_means_hidden(tiny_config, tokenizer, colbert_dim):
    model = M3Model.from_config(tiny_config, tokenizer, colbert_dim=colbert_dim)
    assert model.colbert_dim == tiny_config.hidden_size == model.colbert_head.linear.weight.shape[0]


def test_heads_can_be_skipped_and_shapes_are_checked(tiny_model, tokenizer, texts):
    ids, mask = batch(tokenizer, texts[:2])
    out = tiny_model(ids, mask, sparse=False, colbert=False)
    assert out.dense.shape == (2, 32) and out.sparse_weights is None and out.colbert is None
    with pytest.raises(ValueError, match="input_ids .* and attention_mask .* differ"):
        tiny_model(ids, mask[:, :-1])


# ------------------------------------------------------------------------------------------- padding invariance
def test_extra_padding_never_changes_outputs_or_scores(tiny_model, tokenizer, texts):
    model = tiny_model.eval()
    q_ids, q_mask = batch(tokenizer, [t[:60] for t in texts[:3]])
    p_ids, p_mask = batch(tokenizer, texts[3:8])
    with torch.no_grad():
        q, p = model(q_ids, q_mask), model(p_ids, p_mask)
        q_pad = model(*batch(tokenizer, [t[:60] for t in texts[:3]], extra_padding=7))
        p_pad = model(*batch(tokenizer, texts[3:8], extra_padding=11))
    n = q_ids.shape[1]
    torch.testing.assert_close(q_pad.dense, q.dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q_pad.sparse_weights[:, :n], q.sparse_weights, atol=1e-5, rtol=1e-5)
    assert (q_pad.sparse_weights[:, n:] == 0).all() and (q_pad.colbert[:, n - 1 :] == 0).all()
    pairs = [
        (dense_scores(q.dense, p.dense), dense_scores(q_pad.dense, p_pad.dense)),
        (
            sparse_scores(q.sparse_weights, q.token_ids, p.sparse_weights, p.token_ids),
            sparse_scores(q_pad.sparse_weights, q_pad.token_ids, p_pad.sparse_weights, p_pad.token_ids),
        ),
        (
            colbert_scores(q.colbert, q.colbert_mask, p.colbert, p.colbert_mask),
            colbert_scores(q_pad.colbert, q_pad.colbert_mask, p_pad.colbert, p_pad.colbert_mask),
        ),
    ]
    for plain, padded in pairs:
        assert plain.shape == (3, 5)
        torch.testing.assert_close(padded, plain, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------- training switches
def test_freezing_options(tiny_config, tokenizer):
    model = M3Model.from_config(tiny_config, tokenizer)
    model.freeze(fix_position_embedding=True)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"encoder.embeddings.position_embeddings.weight"}
    model.freeze(fix_encoder=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        "sparse_head.linear.weight",
        "sparse_head.linear.bias",
        "colbert_head.linear.weight",
        "colbert_head.linear.bias",
    }


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model, tokenizer, texts):
    model = tiny_model.train()  # dropout on: checkpointing must replay the same RNG
    ids, mask = batch(tokenizer, texts[:3])

    def gradients():
        model.zero_grad()
        torch.manual_seed(123)
        out = model(ids, mask)
        loss = out.dense.sum() + out.sparse_weights.pow(2).sum() + (out.colbert * 0.5).sum()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.gradient_checkpointing(True)
    assert model.is_gradient_checkpointing
    pickle.loads(pickle.dumps(model))  # DDP's spawned processes receive the model pickled
    checkpointed = gradients()
    model.gradient_checkpointing(False)
    assert not model.is_gradient_checkpointing
    assert plain.keys() == checkpointed.keys() and len(plain) > 20
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)


# ------------------------------------------------------------------------------------------- position extension
def test_extend_positions_copies_learnt_rows_cyclically(tiny_config, tokenizer, texts):
    torch.manual_seed(0)
    tokenizer, config = copy.deepcopy(tokenizer), copy.deepcopy(tiny_config)  # both are mutated in place
    model = M3Model.from_config(config, tokenizer, colbert_dim=8).eval()  # 128 tokens, 130 rows
    old = model.encoder.embeddings.position_embeddings.weight.detach().clone()
    ids, mask = batch(tokenizer, texts[:2])
    with torch.no_grad():
        before = model(ids, mask)
    extend_position_embeddings(model, 300)
    table = model.encoder.embeddings.position_embeddings
    assert model.encoder.config.max_position_embeddings == 302 and table.weight.shape == (302, 32)
    assert table.padding_idx == 1 and model.max_length == 300 and tokenizer.model_max_length == 300
    assert torch.equal(table.weight[:130], old)  # offset rows and the 128 learnt rows untouched
    for row in (130, 131, 257, 258, 301):
        assert torch.equal(table.weight[row], old[2 + (row - 2) % 128])
    assert torch.equal(model.encoder.embeddings.position_ids, torch.arange(302)[None])
    assert model.encoder.embeddings.token_type_ids.shape == (1, 302)
    with torch.no_grad():
        after = model(ids, mask)
        long_ids = torch.cat([torch.tensor([[0]]), torch.randint(4, 500, (1, 298)), torch.tensor([[2]])], 1)
        long_out = model(long_ids, torch.ones_like(long_ids))
    torch.testing.assert_close(
        after.dense, before.dense, atol=0, rtol=0
    )  # short inputs encode exactly as before
    assert long_out.colbert.shape == (1, 299, 8)
    tokenizer.model_max_length = 8192  # the session fixture is shared: restore it


def test_extend_positions_interpolate_and_errors(tiny_config):
    from transformers import AutoModel

    torch.manual_seed(0)
    encoder = AutoModel.from_config(copy.deepcopy(tiny_config))
    old = encoder.embeddings.position_embeddings.weight.detach().clone()
    extend_position_embeddings(encoder, 255, init="interpolate")
    new = encoder.embeddings.position_embeddings.weight.detach()
    assert new.shape == (257, 32) and torch.equal(new[:2], old[:2])
    learnt, grown = old[2:], new[2:]  # 128 -> 255 token positions: new p sits at old p * 127 / 254 = p / 2
    torch.testing.assert_close(grown[0], learnt[0])
    torch.testing.assert_close(grown[-1], learnt[-1])
    torch.testing.assert_close(grown[2 * 10], learnt[10])
    torch.testing.assert_close(grown[2 * 10 + 1], (learnt[10] + learnt[11]) / 2)
    with pytest.raises(ValueError, match="shorter than the current 255 tokens"):
        extend_position_embeddings(encoder, 100)
    with pytest.raises(ValueError, match="init must be"):
        extend_position_embeddings(encoder, 400, init="zeros")
