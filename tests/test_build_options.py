"""build_m3_model's real-model switches: position extension (max_length) and a frozen word-embedding matrix."""

from __future__ import annotations

import torch

from m3lit.training.build import build_m3_model


def test_max_length_extends_positions_and_fix_word_embeddings_freezes_only_that_matrix(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "model")
    old = tiny_model.encoder.embeddings.position_embeddings.weight.detach().clone()  # (128 + 2, H)
    model = build_m3_model(str(folder), max_length=300, fix_word_embeddings=True, fast_cpu_dropout=False)

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

    same = build_m3_model(str(folder), max_length=64, fast_cpu_dropout=False)  # shorter: nothing changes
    assert same.encoder.embeddings.position_embeddings.weight.shape == old.shape
    assert all(p.requires_grad for p in same.parameters())
