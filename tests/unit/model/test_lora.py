"""LoRA fine-tuning (``model.net.lora``): trainable parameters, merged and adapter-only exports (the training
runs: tests/integration/test_model_lora_runs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from huggingface_hub import metadata_load
from m3_reference import assert_lexical_close
from train_utils import fit_three_steps

pytest.importorskip("peft")

from m3lit import M3Embedder  # noqa: E402
from m3lit.export import PROVENANCE_FILE, export  # noqa: E402
from m3lit.inference.encoding import encode_texts, sparse_to_dict  # noqa: E402
from m3lit.model import M3Model  # noqa: E402
from m3lit.model.lora import has_lora, trainable_parameters  # noqa: E402
from m3lit.model.tiny import tiny_xlmr_config  # noqa: E402
from m3lit.model.training_checkpoint import load_training_checkpoint  # noqa: E402
from m3lit.training.build import NetOptions, build_m3_model  # noqa: E402

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value", "dense"]}


@pytest.fixture(scope="module")
def base_folder(tokenizer, tmp_path_factory):
    """A plain tiny model saved in the FlagEmbedding layout (the base a LoRA run starts from)."""
    torch.manual_seed(0)
    config = tiny_xlmr_config(len(tokenizer), max_length=128, dropout=0.0)
    folder = tmp_path_factory.mktemp("base")
    M3Model.from_config(config, tokenizer, colbert_dim=16).save_pretrained(folder)
    return folder


def test_trainable_parameters_are_the_adapters_and_the_heads(base_folder):
    plain = M3Model.from_pretrained(base_folder)
    model = build_m3_model(NetOptions(str(base_folder), lora=LORA))
    r, hidden, dc = LORA["r"], plain.hidden_size, plain.colbert_dim
    expected = 0
    for name, module in plain.encoder.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LORA["target_modules"]:
            expected += r * (module.in_features + module.out_features)  # A (r, in) + B (out, r)
    assert expected > 0
    expected += (hidden + 1) + (hidden * dc + dc)  # sparse head Linear(H, 1) + ColBERT head Linear(H, Dc)
    assert trainable_parameters(model) == expected
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith(("sparse_head.", "colbert_head.")) for n in trainable)
    # the adapted model starts equal to the base model (B = 0)
    ids = torch.tensor([[0, 7, 9, 2], [0, 8, 2, 1]])
    mask = (ids != 1).long()
    with torch.no_grad():
        a, b = plain.eval()(ids, mask), model.eval()(ids, mask)
    # the trained model's pass drops padding (m3lit.model.packing): equal up to float rounding
    torch.testing.assert_close(a.dense, b.dense, rtol=0, atol=1e-6)


def test_bad_lora_settings_name_the_key(base_folder):
    with pytest.raises(ValueError, match=r"model\.net\.lora\.target_modules=\['q_proj'\] matches no layer"):
        build_m3_model(NetOptions(str(base_folder), lora={**LORA, "target_modules": ["q_proj"]}))
    with pytest.raises(ValueError, match=r"model\.net\.lora: unknown key\(s\) \['rank'\]"):
        build_m3_model(NetOptions(str(base_folder), lora={"rank": 4}))
    with pytest.raises(ValueError, match=r"model\.net\.lora\.r must be a positive integer"):
        build_m3_model(NetOptions(str(base_folder), lora={**LORA, "r": 0}))
    with pytest.raises(ValueError, match="fix_encoder"):
        build_m3_model(NetOptions(str(base_folder), lora=LORA, fix_encoder=True))


@pytest.fixture(scope="module")
def lora_trained(base_folder, tokenizer, tmp_path_factory):
    """Three optimizer steps of a LoRA model with M3LitModule, saved by the Lightning Trainer."""
    L.seed_everything(0)
    net = build_m3_model(NetOptions(str(base_folder), lora=LORA))
    frozen = {n: p.detach().clone() for n, p in net.named_parameters() if not p.requires_grad}
    ckpt, _ = fit_three_steps(net, tokenizer, tmp_path_factory.mktemp("run"), lr=1e-2)
    lora_b = [p for n, p in net.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # the adapters were trained
    assert all(torch.equal(p, frozen[n]) for n, p in net.named_parameters() if n in frozen)  # base frozen
    return ckpt, net.eval()


def test_merged_export_equals_the_adapted_model(lora_trained, tmp_path, texts):
    ckpt, model = lora_trained
    assert has_lora(load_training_checkpoint(ckpt).model.encoder)  # the .ckpt rebuilds the adapters
    result = export(ckpt, tmp_path / "export")
    assert result.provenance["lora"]["r"] == LORA["r"]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "export" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if "lora_" in k or "base_layer" in k], "peft keys in the merged export"
    plain = M3Model.from_pretrained(tmp_path / "export")
    assert not has_lora(plain.encoder)
    reference = encode_texts(model, texts, max_length=96, sparse=True, colbert=True)  # the adapted model
    out = M3Embedder(str(tmp_path / "export"), use_fp16=False, devices="cpu", passage_max_length=96).encode(
        texts, return_sparse=True, return_colbert_vecs=True
    )
    np.testing.assert_allclose(out["dense_vecs"], reference.dense, atol=1e-5, rtol=0)
    for i in range(len(texts)):
        assert_lexical_close(out["lexical_weights"][i], sparse_to_dict(*reference.sparse[i]), atol=1e-5)
        np.testing.assert_allclose(out["colbert_vecs"][i], reference.colbert[i], atol=1e-5, rtol=0)
    # sentence-transformers loads the merged folder without peft and agrees on the dense vectors
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tmp_path / "export"), device="cpu")
    np.testing.assert_allclose(st.encode(texts, convert_to_numpy=True), reference.dense, atol=1e-5, rtol=0)


def test_adapter_only_export_loads_with_peft_on_the_base(lora_trained, base_folder, tmp_path, texts):
    from peft import PeftModel
    from transformers import AutoModel

    ckpt, model = lora_trained
    folder = tmp_path / "adapter"
    result = export(ckpt, folder, adapter_only=True, base_model=str(base_folder))
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "sparse_linear.pt",
        "colbert_linear.pt",
    } <= set(result.files)
    assert "model.safetensors" not in result.files
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        base_folder
    )
    assert json.loads((folder / PROVENANCE_FILE).read_text())["adapter_only"] is True
    encoder = PeftModel.from_pretrained(
        AutoModel.from_pretrained(base_folder, add_pooling_layer=False), folder
    )
    batch = model.tokenizer(texts[:4], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.eval()(**batch).last_hidden_state
        want = model.encode_hidden(batch["input_ids"], batch["attention_mask"])
    real = batch["attention_mask"].bool()  # padding rows hold nothing (zeros after a padding-free pass)
    torch.testing.assert_close(hidden[real], want[real], rtol=0, atol=1e-5)
    heads = torch.load(folder / "sparse_linear.pt", weights_only=True)
    torch.testing.assert_close(heads["weight"], model.sparse_head.linear.weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match="adapter_only=true: .* has no LoRA adapters"):
        export(base_folder, tmp_path / "x", adapter_only=True)


def test_adapter_only_export_records_the_runs_base_and_the_documented_recipe_loads_quietly(
    lora_trained, base_folder, tmp_path, texts, capfd
):
    """Issue 30 item 7: without ``base_model=`` the adapter names the model the run started from (it was
    null), and the documented peft recipe (``add_pooling_layer=False``) loads with no missing-key warning."""
    import warnings

    from peft import PeftModel
    from transformers import AutoModel

    ckpt, model = lora_trained
    folder = tmp_path / "adapter"
    export(ckpt, folder, adapter_only=True)
    base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str(base_folder)
    card = (folder / "README.md").read_text()  # a peft card whose snippet loads this base
    assert metadata_load(folder / "README.md")["library_name"] == "peft"
    assert f'AutoModel.from_pretrained("{base_folder}", add_pooling_layer=False), "{folder}")' in card
    assert "BGEM3FlagModel" not in card
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder = PeftModel.from_pretrained(AutoModel.from_pretrained(base, add_pooling_layer=False), folder)
    said = " ".join(str(w.message) for w in caught) + " ".join(capfd.readouterr())
    assert "missing" not in said.lower() and "MISSING" not in said, said
    batch = model.tokenizer(texts[:4], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.eval()(**batch).last_hidden_state
        want = model.encode_hidden(batch["input_ids"], batch["attention_mask"])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(hidden[real], want[real], rtol=0, atol=1e-5)
    docs = (Path(__file__).parents[3] / "docs" / "inference.md").read_text()
    assert (
        'AutoModel.from_pretrained("BAAI/bge-m3", add_pooling_layer=False)' in docs
    )  # the recipe tested here
