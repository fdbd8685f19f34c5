"""build_m3_model's real-model switches: position extension (max_length), a frozen word-embedding matrix and
the fresh sparse head's start."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from m3lit.scores import sparse_scores
from m3lit.training.build import NetOptions, build_m3_model


def test_max_length_extends_positions_and_fix_word_embeddings_freezes_only_that_matrix(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "model")
    old = tiny_model.encoder.embeddings.position_embeddings.weight.detach().clone()  # (128 + 2, H)
    model = build_m3_model(
        NetOptions(str(folder), max_length=300, fix_word_embeddings=True, fast_cpu_dropout=False)
    )

    assert model.max_length == 300
    table = model.encoder.embeddings.position_embeddings.weight
    assert table.shape == (302, old.shape[1])
    torch.testing.assert_close(table[: old.shape[0]], old, rtol=0, atol=0)  # learnt rows unchanged
    learnt = old.shape[0] - 2  # copy init: position p+L repeats position p (offset 2)
    torch.testing.assert_close(table[2 + learnt : 2 + 2 * learnt], old[2:], rtol=0, atol=0)

    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["encoder.embeddings.word_embeddings.weight"]
    ids = torch.randint(5, 100, (1, 300))
    out = model(ids, torch.ones_like(ids))
    assert out.dense.shape == (1, model.hidden_size)

    same = build_m3_model(
        NetOptions(str(folder), max_length=64, fast_cpu_dropout=False)
    )  # shorter: nothing changes
    assert same.encoder.embeddings.position_embeddings.weight.shape == old.shape
    assert all(p.requires_grad for p in same.parameters())


def test_sparse_init_uniform_starts_lexical_scores_as_shared_token_counts(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    init = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_length": 64}
    model = build_m3_model(
        NetOptions(None, tokenizer=str(tmp_path / "tok"), init=init, sparse_init_uniform=0.25)
    )
    model.eval()
    texts = ["the model scores the passage", "a passage the model reads", "unrelated words here"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"])
    specials = set(tokenizer.all_special_ids)
    bags = [
        {t for t, m in zip(ids.tolist(), mask.tolist(), strict=True) if m and t not in specials}
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
    ]
    got = sparse_scores(out.sparse_weights, batch["input_ids"], out.sparse_weights, batch["input_ids"])
    expected = torch.tensor([[0.25**2 * len(a & b) for b in bags] for a in bags])
    torch.testing.assert_close(got, expected)
    assert len(bags[0] & bags[1]) > 0  # the check is not vacuous


def test_sparse_init_options_exclude_each_other(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match="not both"):
        build_m3_model(
            NetOptions(None, tokenizer=str(tmp_path / "tok"), sparse_init_uniform=0.1, sparse_init_scale=0.1)
        )
    with pytest.raises(ValueError, match="sparse_init_uniform must be > 0"):
        build_m3_model(NetOptions(None, tokenizer=str(tmp_path / "tok"), sparse_init_uniform=0.0))


def test_the_model_net_config_keys_are_the_options_fields():
    import dataclasses

    from omegaconf import OmegaConf

    from m3lit.training.build import net_from_config

    cfg = OmegaConf.load(Path(__file__).resolve().parents[3] / "configs" / "model" / "default.yaml").net
    assert cfg._target_ == "m3lit.training.build.net_from_config"
    assert set(cfg) - {"_target_"} == {f.name for f in dataclasses.fields(NetOptions)}
    assert net_from_config.options_type is NetOptions
    with pytest.raises(TypeError, match="unexpected keyword argument 'tokeniser'"):
        net_from_config(tokeniser="x")
