"""Export: Lightning checkpoint -> one folder for m3lit, sentence-transformers and FlagEmbedding."""

from __future__ import annotations

import json
import os
import pickle

import lightning as L
import numpy as np
import pytest
import torch
from m3_reference import assert_lexical_close, naive_encode
from train_utils import fit_three_steps

import m3lit
from m3lit import M3Embedder
from m3lit.export import PROVENANCE_FILE, export, main
from m3lit.inference.encoding import encode_texts, sparse_to_dict
from m3lit.model import M3Model
from m3lit.model.reference import ModelReferenceError
from m3lit.model.tiny import tiny_xlmr_config
from m3lit.model.training_checkpoint import CKPT_META_KEY, config_hash, load_training_checkpoint

EXPECTED_FILES = {
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "sparse_linear.pt",
    "colbert_linear.pt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    PROVENANCE_FILE,
}


@pytest.fixture(scope="module")
def trained(tokenizer, tmp_path_factory):
    """Three optimizer steps of M3LitModule on a tiny model, saved by the Lightning Trainer."""
    L.seed_everything(0)
    net = M3Model.from_config(tiny_xlmr_config(len(tokenizer), max_length=128), tokenizer, colbert_dim=16)
    before = net.sparse_head.linear.weight.detach().clone()
    ckpt, lit = fit_three_steps(net, tokenizer, tmp_path_factory.mktemp("run"))
    assert not torch.equal(before, net.sparse_head.linear.weight)  # the heads were trained
    return ckpt, net.eval(), lit


def test_export_round_trip(trained, tmp_path, texts):
    ckpt, model, lit = trained
    result = export(ckpt, tmp_path / "export")
    assert set(result.files) >= EXPECTED_FILES
    meta = json.loads((tmp_path / "export" / PROVENANCE_FILE).read_text())
    assert meta["source_checkpoint"] == str(ckpt.resolve())
    assert meta["step"] == 3 and meta["stage"] == "unified"
    assert meta["config_hash"] == config_hash(dict(lit.hparams)) and len(meta["config_hash"]) == 16
    assert meta["m3lit_version"] == m3lit.__version__ and meta["fp16"] is False and meta["colbert_dim"] == 16
    reference = encode_texts(model, texts, max_length=96, sparse=True, colbert=True)
    for source in (tmp_path / "export", ckpt):  # the export folder and the .ckpt itself
        emb = M3Embedder(str(source), use_fp16=False, devices="cpu", passage_max_length=96)
        out = emb.encode(texts, return_sparse=True, return_colbert_vecs=True)
        np.testing.assert_array_equal(out["dense_vecs"], reference.dense)
        for i in range(len(texts)):
            assert out["lexical_weights"][i] == sparse_to_dict(*reference.sparse[i])
            np.testing.assert_array_equal(out["colbert_vecs"][i], reference.colbert[i])


def test_sentence_transformers_embeddings_equal_dense(trained, tmp_path, texts, capfd):
    """The export loads in sentence-transformers with nothing reported missing (issue 30 item 7: it printed
    ``pooler.dense.weight | MISSING``) and gives the dense vectors."""
    from sentence_transformers import SentenceTransformer

    ckpt, model, _ = trained
    export(ckpt, tmp_path / "export")
    capfd.readouterr()
    st = SentenceTransformer(str(tmp_path / "export"), device="cpu")
    said = " ".join(capfd.readouterr())
    assert "MISSING" not in said and "newly initialized" not in said, said
    assert getattr(st[0].auto_model, "pooler", None) is None
    assert st.max_seq_length == 128
    got = st.encode(texts, batch_size=5, convert_to_numpy=True)
    want = M3Embedder(str(tmp_path / "export"), use_fp16=False, devices="cpu", passage_max_length=128).encode(
        texts
    )
    np.testing.assert_allclose(got, want["dense_vecs"], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_fp16_export_via_command_line(trained, tmp_path, texts, capsys):
    ckpt, model, _ = trained
    folder = tmp_path / "fp16"
    assert main([f"ckpt_path={ckpt}", f"output_dir={folder}", "fp16=true"]) == 0
    assert "step: 3" in capsys.readouterr().out
    assert json.loads((folder / PROVENANCE_FILE).read_text())["fp16"] is True
    assert json.loads((folder / "config.json").read_text())["dtype"] == "float16"
    for name in ("sparse_linear.pt", "colbert_linear.pt"):
        assert {t.dtype for t in torch.load(folder / name, weights_only=True).values()} == {torch.float16}
    emb = M3Embedder(str(folder), use_fp16=False, devices="cpu", passage_max_length=96)
    out = emb.encode(texts[:3], return_sparse=True, return_colbert_vecs=True)
    rounded = M3Model.from_config(model.encoder.config, model.tokenizer, colbert_dim=16)
    rounded.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    for i, text in enumerate(texts[:3]):
        dense, lexical, colbert, _ = naive_encode(rounded, text, 96)
        np.testing.assert_allclose(out["dense_vecs"][i], dense, atol=1e-5)
        assert_lexical_close(out["lexical_weights"][i], lexical)
        np.testing.assert_allclose(out["colbert_vecs"][i], colbert, atol=1e-5)
    # re-export of an export folder keeps the provenance
    again = export(folder, tmp_path / "again")
    assert again.provenance["step"] == 3 and again.provenance["reexported_from"] == str(folder.resolve())


def test_command_line_errors(trained, tmp_path, command_error):
    ckpt, _, _ = trained
    for argv, needle in [
        ([f"ckpt_path={ckpt}"], "output_dir=... is required"),
        ([f"ckpt_path={ckpt}", f"output_dir={tmp_path}", "fp32=true"], "unknown option 'fp32'"),
        ([f"ckpt_path={ckpt}", f"output_dir={tmp_path / 'x'}", "fp16=maybe"], "fp16 must be true or false"),
    ]:
        status, line = command_error(main, argv)
        assert status == 2 and line.startswith("error: export: ") and needle in line, line
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite=true"):
        export(ckpt, tmp_path / "full")
    with pytest.raises(ModelReferenceError, match="no such checkpoint"):
        export(tmp_path / "missing.ckpt", tmp_path / "out")


def test_checkpoint_without_metadata_needs_base_model(trained, tmp_path, texts):
    ckpt, model, _ = trained
    data = torch.load(ckpt, weights_only=True)
    del data[CKPT_META_KEY]
    bare = tmp_path / "bare.ckpt"
    torch.save(data, bare)
    with pytest.raises(ValueError, match="base_model="):
        load_training_checkpoint(bare)
    base = tmp_path / "base"
    torch.manual_seed(1)
    M3Model.from_config(model.encoder.config, model.tokenizer, colbert_dim=16).save_pretrained(
        base
    )  # other weights
    loaded = load_training_checkpoint(bare, base_model=base).model
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_headless_folder_is_not_exported(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "plain")
    os.remove(tmp_path / "plain" / "sparse_linear.pt")
    with pytest.raises(ValueError, match="untrained sparse and ColBERT heads"):
        export(tmp_path / "plain", tmp_path / "out")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_malicious_checkpoint_is_refused(trained, tmp_path):
    ckpt, _, _ = trained
    marker = tmp_path / "payload_ran"
    data = torch.load(ckpt, weights_only=True)
    data["hyper_parameters"]["callback"] = _Payload(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save(data, evil)
    with pytest.raises(pickle.UnpicklingError, match="refused to load"):
        export(evil, tmp_path / "out")
    with pytest.raises(pickle.UnpicklingError, match="refused to load"):
        M3Embedder(str(evil), use_fp16=False, devices="cpu")
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # proof the payload is live
    assert marker.exists()
