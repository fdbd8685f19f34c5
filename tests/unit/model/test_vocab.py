"""One vocabulary across commands: the same model reference kinds everywhere (folder, .ckpt, hub id, with
one immediate error offline) and the same length keys (old spellings warn). A scalar ``data.batch_size``:
tests/integration/test_data_batch_size_run.py."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import torch
from train_utils import tiny_corpus, tiny_run_overrides

from m3lit.config.compose import compose
from m3lit.corpora.mining import main as mine
from m3lit.encode import main as encode
from m3lit.evaluate import load_config
from m3lit.evaluate import main as evaluate
from m3lit.export import main as export
from m3lit.model.reference import ModelReferenceError
from m3lit.model.training_checkpoint import CKPT_META_KEY, checkpoint_metadata
from m3lit.retrieval import RetrievalConfig, write_beir
from m3lit.train import train

HUB_ID = "nobody-m3lit/not-cached-model"  # a hub id that is in no local cache


@pytest.fixture(scope="module")
def references(tiny_config, tokenizer, tmp_path_factory):
    """The same weights as a Lightning .ckpt and as an export folder, plus small inputs for every command."""
    from m3lit.model import M3Model

    root = tmp_path_factory.mktemp("vocab")
    torch.manual_seed(3)
    model = M3Model.from_config(tiny_config, tokenizer, colbert_dim=16)
    ckpt = root / "last.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 2, CKPT_META_KEY: checkpoint_metadata(model)}, ckpt)
    folder = model.save_pretrained(root / "export")
    texts = [
        f"text number {i} about {w}"
        for i, w in enumerate(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"])
    ]
    lines = [
        {"query": t, "pos": [texts[(i + 1) % 8]], "neg": [texts[(i + 2) % 8]]} for i, t in enumerate(texts)
    ]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    (root / "passages.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    write_beir(root / "beir", {f"d{i}": t for i, t in enumerate(texts)}, {"q0": "alpha"}, {"q0": {"d0": 1}})
    return {"ckpt": str(ckpt), "folder": str(folder), "root": root}


def _mine(ref, root, name):
    out = root / f"mined_{name}.jsonl"
    mine([f"model={ref}", f"input={root / 'train.jsonl'}", f"output={out}", "range=0-4", "negative_number=2",
          "device=cpu", "progress=false", "passage_max_length=32"])  # fmt: skip
    return out.read_text()


def test_every_command_takes_a_folder_and_a_ckpt_with_the_same_result(references):
    root, ckpt, folder = references["root"], references["ckpt"], references["folder"]
    assert _mine(ckpt, root, "ckpt") == _mine(folder, root, "folder")  # mining refused .ckpt before
    dense = []
    for name, ref in (("ckpt", ckpt), ("folder", folder)):
        encode([f"model={ref}", f"input={root / 'passages.txt'}", f"output_dir={root / ('enc_' + name)}",
                "progress=false", "max_length=32"])  # fmt: skip
        dense.append(np.load(root / f"enc_{name}" / "dense.npy"))
    np.testing.assert_array_equal(dense[0], dense[1])
    fast = [
        "progress=false",
        "modes=[dense,sparse]",
        "retrieval.query_max_len=32",
        "retrieval.passage_max_len=32",
    ]
    a = evaluate([f"model={ckpt}", f"data={root / 'beir'}", f"output_dir={root / 'ev_a'}", *fast])
    b = evaluate([f"model={folder}", f"data={root / 'beir'}", f"output_dir={root / 'ev_b'}", *fast])
    assert a == b
    for name, ref in (("ckpt", ckpt), ("folder", folder)):  # model= is export's key (ckpt_path= still works)
        assert export([f"model={ref}", f"output_dir={root / ('ex_' + name)}"]) == 0
    assert (root / "ex_ckpt" / "sparse_linear.pt").read_bytes() == (
        root / "ex_folder" / "sparse_linear.pt"
    ).read_bytes()


def test_train_starts_from_a_ckpt(references, tmp_path, tokenizer):
    corpus = tiny_corpus(tmp_path / "corpus", tokenizer)
    overrides = [o for o in tiny_run_overrides(corpus, tmp_path / "run") if not o.startswith("model.net.")]
    cfg = compose([*overrides, f"model.net.name_or_path={references['ckpt']}", "train=false", "export=false"])
    _, objects = train(cfg)
    expected = torch.load(references["ckpt"], weights_only=True)["state_dict"]
    got = objects["model"].model.state_dict()
    assert all(torch.equal(got[k], expected[f"model.{k}"]) for k in got)


def test_a_hub_id_offline_is_one_immediate_error_naming_the_key(references, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("M3LIT_DEBUG", "1")  # the commands raise the error itself instead of reporting it
    root = references["root"]
    calls = [
        ("model=", lambda: evaluate([f"model={HUB_ID}", f"data={root / 'beir'}", f"output_dir={tmp_path}"])),
        ("model=", lambda: encode([f"model={HUB_ID}", f"input={root / 'passages.txt'}", f"output_dir={tmp_path}"])),
        ("model=", lambda: export([f"model={HUB_ID}", f"output_dir={tmp_path / 'x'}"])),
        ("model=", lambda: mine([f"model={HUB_ID}", f"input={root / 'train.jsonl'}", f"output={tmp_path / 'o'}"])),
    ]  # fmt: skip
    from m3lit.training.build import NetOptions, build_m3_model

    calls.append(("model.net.name_or_path=", lambda: build_m3_model(NetOptions(HUB_ID))))
    for key, call in calls:
        started = time.perf_counter()
        with pytest.raises(ModelReferenceError) as error:
            call()
        assert time.perf_counter() - started < 5
        message = str(error.value)
        assert (
            f"{key}{HUB_ID}" in message and "HF_HUB_OFFLINE is set" in message and "local folder" in message
        )


def test_length_keys_have_one_spelling_and_old_ones_warn(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = load_config(["model=x", "data=y", "retrieval.passage_max_length=99"])
    assert cfg.retrieval.passage_max_len == 99
    assert "retrieval.passage_max_length is deprecated, use retrieval.passage_max_len" in caplog.text
    assert RetrievalConfig.from_mapping({"query_max_length": 7, "passage_max_len": 9}).query_max_len == 7
