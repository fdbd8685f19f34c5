"""The FlagEmbedding folder layout: save -> load round trip, fp16 heads, missing heads, unsafe pickles, errors."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
import torch

from m3lit.model import M3Model
from m3lit.model.export_folder import load_head_state


class Gadget:
    """A pickled object that a safe loader must refuse to rebuild."""

    def __reduce__(self):
        return (print, ("this must never run",))


def encode(model, tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(enc["input_ids"], enc["attention_mask"])


def assert_same_outputs(a, b, atol=0.0):
    for field in ("dense", "sparse_weights", "colbert"):
        torch.testing.assert_close(
            getattr(b, field), getattr(a, field), atol=atol, rtol=0 if atol == 0 else 1e-3
        )


@pytest.fixture
def saved(tiny_model, tmp_path):
    torch.manual_seed(1)
    with torch.no_grad():  # non-trivial head biases, so a head that was not loaded cannot pass by accident
        tiny_model.sparse_head.linear.bias.uniform_(0.5, 1.0)
        tiny_model.colbert_head.linear.bias.normal_()
    return tiny_model, tiny_model.save_pretrained(tmp_path / "model")


def test_round_trip_gives_identical_outputs_and_the_flagembedding_layout(saved, tokenizer, texts):
    model, folder = saved
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert {"sparse_linear.pt", "colbert_linear.pt"} <= files
    sparse = torch.load(folder / "sparse_linear.pt", weights_only=True)
    colbert = torch.load(folder / "colbert_linear.pt", weights_only=True)
    assert set(sparse) == set(colbert) == {"weight", "bias"}
    assert sparse["weight"].shape == (1, 32) and sparse["bias"].shape == (1,)
    assert colbert["weight"].shape == (16, 32) and colbert["bias"].shape == (16,)
    loaded = M3Model.from_pretrained(folder)
    assert loaded.heads_loaded and loaded.colbert_dim == 16
    assert loaded.sparse_head.special_token_ids.tolist() == model.sparse_head.special_token_ids.tolist()
    assert_same_outputs(encode(model, tokenizer, texts[:4]), encode(loaded, loaded.tokenizer, texts[:4]))


def test_sentence_transformers_files_use_cls_pooling_and_normalize(saved):
    _, folder = saved
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_cls_token"] and not pooling["pooling_mode_mean_tokens"]
    assert pooling["word_embedding_dimension"] == 32
    assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == 128


def test_heads_saved_in_fp16_load_as_float32(saved, tokenizer, texts):
    model, folder = saved
    for name in ("sparse_linear.pt", "colbert_linear.pt"):  # like BAAI/bge-m3: fp32 encoder, fp16 heads
        state = torch.load(folder / name, weights_only=True)
        torch.save({k: v.half() for k, v in state.items()}, folder / name)
    loaded = M3Model.from_pretrained(folder)
    assert loaded.heads_loaded and loaded.colbert_head.linear.weight.dtype == torch.float32
    torch.testing.assert_close(
        loaded.colbert_head.linear.weight, model.colbert_head.linear.weight.half().float(), atol=0, rtol=0
    )
    assert_same_outputs(
        encode(model, tokenizer, texts[:3]), encode(loaded, loaded.tokenizer, texts[:3]), atol=2e-3
    )


def test_fully_fp16_folder_loads(tiny_model, tmp_path, tokenizer, texts):
    folder = tiny_model.save_pretrained(tmp_path / "half", fp16=True)
    assert torch.load(folder / "sparse_linear.pt", weights_only=True)["weight"].dtype == torch.float16
    loaded = M3Model.from_pretrained(folder)  # float32 by default, whatever the files hold
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    assert {p.dtype for p in M3Model.from_pretrained(folder, torch_dtype=None).parameters()} == {
        torch.float32
    }
    assert {p.dtype for p in M3Model.from_pretrained(folder, torch_dtype="auto").parameters()} == {
        torch.float16
    }
    assert_same_outputs(
        encode(tiny_model, tokenizer, texts[:3]), encode(loaded, loaded.tokenizer, texts[:3]), atol=2e-3
    )
    half = M3Model.from_pretrained(folder, torch_dtype=torch.float16)
    assert {p.dtype for p in half.parameters()} == {torch.float16}


def test_missing_head_files_warn_loudly_and_initialise_heads(saved, caplog):
    _, folder = saved
    (folder / "colbert_linear.pt").unlink()
    (folder / "sparse_linear.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="m3lit.model.m3"):
        loaded = M3Model.from_pretrained(folder, colbert_dim=8)
    assert not loaded.heads_loaded and loaded.colbert_dim == 8
    assert "NEWLY INITIALISED" in caplog.text and "sparse_linear.pt" in caplog.text
    assert "colbert_linear.pt" in caplog.text


def test_unsafe_pickle_in_a_head_file_is_refused(saved, capsys):
    _, folder = saved
    torch.save({"weight": torch.zeros(1, 32), "bias": Gadget()}, folder / "sparse_linear.pt")
    with pytest.raises(pickle.UnpicklingError):
        M3Model.from_pretrained(folder)
    assert "this must never run" not in capsys.readouterr().out


def test_bad_head_files_and_missing_paths_raise_clear_errors(saved, tmp_path):
    _, folder = saved
    torch.save({"weight": torch.zeros(16, 31), "bias": torch.zeros(16)}, folder / "colbert_linear.pt")
    with pytest.raises(ValueError, match=r"colbert_linear.pt: weight \(16, 31\) / bias \(16,\) do not form"):
        M3Model.from_pretrained(folder)
    torch.save({"w": torch.zeros(1, 32)}, folder / "colbert_linear.pt")
    with pytest.raises(
        ValueError, match=r"expected a Linear state dict with keys \['bias', 'weight'\], found \['w'\]"
    ):
        load_head_state(folder / "colbert_linear.pt")
    with pytest.raises(FileNotFoundError, match="head file .*nothing.pt not found"):
        load_head_state(tmp_path / "nothing.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        M3Model.from_pretrained(tmp_path / "no_such_model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        M3Model.from_pretrained(tmp_path / "empty")
