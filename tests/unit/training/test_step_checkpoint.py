"""``StepCheckpoint`` disk policy in real tiny runs: one file per step (``last.ckpt`` a hard link),
``keep_last_n``, and weights-only checkpoints that export and evaluate."""

from __future__ import annotations

import json
import os

import pytest
import torch
from train_utils import tiny_corpus, tiny_run_overrides

from m3lit.callbacks.checkpoint import StepCheckpoint
from m3lit.config.compose import compose
from m3lit.evaluate import main as evaluate_main
from m3lit.export import main as export_main
from m3lit.model import M3Model
from m3lit.train import train

SCHEDULE = "callbacks.stage_switch.schedule={0:{stage:unified,source:labelled}}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tokenizer):
    return tiny_corpus(tmp_path_factory.mktemp("corpus"), tokenizer)


def run(corpus, run_dir, *extra):
    cfg = compose(tiny_run_overrides(corpus, run_dir, SCHEDULE, "export=false", *extra))
    return train(cfg)


def test_one_file_per_step_and_keep_last_n(corpus, tmp_path):
    _, objects = run(
        corpus,
        tmp_path,
        "trainer.max_steps=5",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "callbacks.model_checkpoint.save_top_k=-1",
        "callbacks.model_checkpoint.keep_last_n=2",
    )
    folder = tmp_path / "checkpoints"
    names = sorted(p.name for p in folder.iterdir())
    # steps 2, 4 and 5 (the end) were saved; keep_last_n=2 deleted step 2
    assert names == ["last.ckpt", "step_000004.ckpt", "step_000005.ckpt"]
    inodes = {name: os.stat(folder / name).st_ino for name in names}
    assert inodes["last.ckpt"] == inodes["step_000005.ckpt"]  # a hard link, not a copy
    assert len(set(inodes.values())) == 2 and os.stat(folder / "last.ckpt").st_nlink == 2
    last = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 5 and "optimizer_states" in last
    module = objects["model"]
    for name, value in module.state_dict().items():
        torch.testing.assert_close(last["state_dict"][name], value, rtol=0, atol=0, msg=name)
    saver = next(c for c in objects["callbacks"] if isinstance(c, StepCheckpoint))
    assert saver.state_dict()["step_files"] == [str(folder / f"step_00000{s}.ckpt") for s in (4, 5)]


def test_rewriting_last_never_truncates_the_linked_step_file(corpus, tmp_path):
    """save_top_k=0: no step files, so last.ckpt is written on its own (unlink, then write): a file that
    last.ckpt was hard-linked to (as after an earlier run in the same folder) keeps its bytes."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "step_000099.ckpt").write_bytes(b"an earlier step")
    os.link(folder / "step_000099.ckpt", folder / "last.ckpt")
    run(
        corpus,
        tmp_path,
        "trainer.max_steps=3",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "callbacks.model_checkpoint.save_top_k=0",
    )
    assert (folder / "step_000099.ckpt").read_bytes() == b"an earlier step"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step_000099.ckpt"]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3


def test_keep_last_n_needs_every_step_file():
    with pytest.raises(ValueError, match="keep_last_n=2 needs save_top_k=-1"):
        StepCheckpoint(save_top_k=1, keep_last_n=2)
    with pytest.raises(ValueError, match="keep_last_n must be >= 1"):
        StepCheckpoint(save_top_k=-1, keep_last_n=0)


def test_weights_only_checkpoint_exports_and_evaluates(corpus, tmp_path, capsys):
    overrides = ("trainer.max_steps=2", "callbacks.model_checkpoint.every_n_train_steps=2")
    _, objects = run(
        corpus, tmp_path / "light", *overrides, "callbacks.model_checkpoint.save_weights_only=true"
    )
    run(corpus, tmp_path / "full", *overrides)
    light = tmp_path / "light" / "checkpoints" / "last.ckpt"
    full = tmp_path / "full" / "checkpoints" / "last.ckpt"
    state = torch.load(light, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in state and state["global_step"] == 2
    params = sum(p.numel() for p in objects["model"].parameters())
    # fp32 weights: 4 bytes/param (+ metadata); AdamW's two moments add 8 bytes/param to the full file
    assert 4 * params < light.stat().st_size < 4 * params + 200_000
    assert full.stat().st_size - light.stat().st_size > 8 * params
    print(f"\nparams {params}: weights-only {light.stat().st_size} B, full {full.stat().st_size} B")

    out = tmp_path / "export"
    assert export_main([f"ckpt_path={light}", f"output_dir={out}"]) == 0
    exported = M3Model.from_pretrained(out)
    for name, value in exported.state_dict().items():
        torch.testing.assert_close(value, state["state_dict"][f"model.{name}"], rtol=0, atol=0, msg=name)
    assert json.loads((out / "m3lit.json").read_text())["step"] == 2

    common = [f"data={corpus['eval']}", "modes=[dense,all]", "progress=false", "retrieval.batch_size=64"]
    from_ckpt = evaluate_main([f"model={light}", f"output_dir={tmp_path / 'a'}", *common])
    from_export = evaluate_main([f"model={out}", f"output_dir={tmp_path / 'b'}", *common])
    assert set(from_ckpt) == {"dense", "all"} and from_ckpt == from_export
