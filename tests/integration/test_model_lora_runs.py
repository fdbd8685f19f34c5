"""LoRA training runs: a killed run resumes bit for bit, and 2 CPU processes from the command line (the rest
of LoRA: tests/unit/model/test_lora.py).
"""

from __future__ import annotations

import pytest
import torch
from test_resume import RESUME_RUN, CrashAt  # noqa: F401  (CrashAt: hydra target test_resume.CrashAt)
from train_utils import run_train_cli, tiny_corpus, tiny_run_overrides

pytest.importorskip("peft")

from m3lit.config.compose import compose  # noqa: E402
from m3lit.model import M3Model  # noqa: E402
from m3lit.model.lora import has_lora  # noqa: E402
from m3lit.model.training_checkpoint import safe_torch_load  # noqa: E402
from m3lit.train import train  # noqa: E402


@pytest.mark.timeout(600)
def test_lora_ddp_cpu_from_the_command_line(tmp_path, tokenizer):
    """`trainer=ddp_cpu model.net.lora=...`: 2 processes, 2 steps, gradient cache; both ranks end equal."""
    corpus = tiny_corpus(tmp_path / "corpus", tokenizer)
    run = tmp_path / "run"
    overrides = tiny_run_overrides(
        corpus,
        run,
        "trainer=ddp_cpu",
        "trainer.max_steps=2",
        "export=false",
        "model.sub_batch_mode=gradcache",
        "model.sub_batch_size=2",
        "model.net.lora={r:4,alpha:8,dropout:0.0,target_modules:[query,value]}",
        "callbacks.stage_switch.schedule={0:{stage:unified_self_distill,source:labelled}}",
    )
    done = run_train_cli(overrides, timeout=540, threads=1)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2 and state["m3lit"]["lora"]["r"] == 4
    lora_b = [v for k, v in state["state_dict"].items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)


#: test_resume's run (stage switches, gradient cache, dropout) with LoRA adapters (adapter dropout on too).
LORA_RUN = (*RESUME_RUN, "model.net.lora={r:4,alpha:8,dropout:0.1,target_modules:[query,value,dense]}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tokenizer):
    return tiny_corpus(tmp_path_factory.mktemp("corpus"), tokenizer)


def test_lora_kill_and_resume_equals_uninterrupted_run_bit_for_bit(corpus, tmp_path):
    _, full = train(compose(tiny_run_overrides(corpus, tmp_path / "full", *LORA_RUN)))
    assert full["trainer"].global_step == 8 and has_lora(full["model"].model.encoder)
    kill = ("+callbacks.crash._target_=test_resume.CrashAt", "+callbacks.crash.step=5")
    with pytest.raises(RuntimeError, match="simulated crash at step 5"):
        train(compose(tiny_run_overrides(corpus, tmp_path / "killed", *LORA_RUN, *kill)))
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert safe_torch_load(last)["global_step"] == 4
    _, resumed = train(
        compose(tiny_run_overrides(corpus, tmp_path / "resumed", *LORA_RUN, f"ckpt_path={last}"))
    )
    a = {k: v.detach().clone() for k, v in full["model"].model.state_dict().items()}
    b = {k: v.detach().clone() for k, v in resumed["model"].model.state_dict().items()}
    assert a.keys() == b.keys() and any("lora_A" in k for k in a)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed weights differ from the uninterrupted run: {different[:5]}"
    start = safe_torch_load(last)["state_dict"]
    moved = [k for k in a if not torch.equal(start["model." + k], a[k])]
    assert moved and all("lora_" in k or k.startswith(("sparse_head", "colbert_head")) for k in moved)
    # the run's own export (export=true) is merged: plain keys, loads without adapters
    assert not has_lora(M3Model.from_pretrained(full["export_dir"]).encoder)
