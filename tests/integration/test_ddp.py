"""A 2-process CPU DDP run (``trainer=ddp_cpu``: Lightning DDP, spawn, gloo) with cross-device negatives.

The exact gradient cache runs under Lightning's DDP (sub-batches of 2 rows, every backward but the last
inside ``no_sync``). Each rank records its batch, its synchronised gradients at the first step and its
final weights. The
test then checks that (1) cross-device negatives see W*B*G passages, (2) the synchronised dense-stage
gradients equal one process's gradients on the gathered batch (every rank's queries against every
rank's passages), and (3) both ranks end with identical weights.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from train_utils import run_train_cli, tiny_corpus, tiny_run_overrides

from m3lit.config.compose import compose
from m3lit.train import train
from m3lit.training.gradcache import split_batch_step
from m3lit.training.objective import m3_objective
from m3lit.training.stages import stage_spec

B, G, W = 4, 3, 2


class DDPRecorder(L.Callback):
    """Writes ``initial.pt`` (rank 0), ``rank{r}_step0.pt`` (batch, grads, negatives) and ``rank{r}_final.pt``."""

    def __init__(self, out_dir: str) -> None:
        self.out = Path(out_dir)
        self.batch = None

    def on_train_start(self, trainer, pl_module):
        if trainer.global_rank == 0:
            torch.save(
                {k: v.detach().cpu() for k, v in pl_module.model.state_dict().items()},
                self.out / "initial.pt",
            )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch = batch

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step != 0:
            return
        grads = {
            n: p.grad.detach().clone() for n, p in pl_module.model.named_parameters() if p.grad is not None
        }
        record = {
            "queries": [(s.input_ids, s.attention_mask) for s in self.batch.queries],
            "passages": [(s.input_ids, s.attention_mask) for s in self.batch.passages],
            "negatives_per_query": pl_module.negatives_per_query(self.batch),
            "world_size": trainer.world_size,
            "grads": grads,
        }
        torch.save(record, self.out / f"rank{trainer.global_rank}_step0.pt")

    def on_train_end(self, trainer, pl_module):
        torch.save(pl_module.model.state_dict(), self.out / f"rank{trainer.global_rank}_final.pt")


def test_ddp_cross_device_negatives_gradients_and_weights(tmp_path, tokenizer):
    corpus = tiny_corpus(tmp_path / "corpus", tokenizer)
    record = tmp_path / "record"
    record.mkdir()
    overrides = tiny_run_overrides(
        corpus,
        tmp_path / "run",
        "trainer=ddp_cpu",
        "trainer.max_steps=3",
        "export=false",
        "model.negatives_cross_device=true",
        "model.max_grad_norm=null",  # compare raw synchronised gradients
        "model.sub_batch_mode=gradcache",  # several backwards per step: all but the last inside no_sync
        "model.sub_batch_size=2",
        "callbacks.stage_switch.schedule={0:{stage:dense,source:labelled}}",
        f"data.bucket_batch_sizes=[{B},{B}]",
        f"data.train_group_size={G}",
        "+callbacks.recorder._target_=test_ddp.DDPRecorder",
        f"+callbacks.recorder.out_dir={record}",
    )
    cfg = compose(overrides)
    train(cfg)

    ranks = [torch.load(record / f"rank{r}_step0.pt", weights_only=True) for r in range(W)]
    assert all(r["world_size"] == W for r in ranks)
    assert [r["negatives_per_query"] for r in ranks] == [W * B * G - 1] * W  # W*B*G candidates per query
    n_passages = [sum(ids.shape[0] for ids, _ in r["passages"]) for r in ranks]
    assert n_passages == [B * G] * W
    assert not torch.equal(ranks[0]["queries"][0][0], ranks[1]["queries"][0][0]), (
        "ranks must see different data"
    )

    # one process, the gathered batch: rank 0's then rank 1's queries and passages, same initial weights
    model = instantiate(cfg.model.net)
    model.load_state_dict(torch.load(record / "initial.pt", weights_only=True))
    model.train()
    from m3lit.data.batch import Encoded

    queries = [Encoded(ids, mask) for r in ranks for ids, mask in r["queries"]]
    passages = [Encoded(ids, mask) for r in ranks for ids, mask in r["passages"]]
    loss_fn = partial(m3_objective, group_size=G, stage=stage_spec("dense"))
    split_batch_step(
        model,
        queries,
        passages,
        heads={"dense": True, "sparse": False, "colbert": False},
        loss_fn=loss_fn,
        backward=lambda loss: loss.backward(),
        pad_token_id=tokenizer.pad_token_id,
    )
    reference = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    for r in ranks:
        assert r["grads"].keys() == reference.keys()
        for name, grad in reference.items():
            torch.testing.assert_close(
                r["grads"][name], grad, rtol=1e-4, atol=5e-6, msg=lambda m, n=name: f"{n}: {m}"
            )

    finals = [torch.load(record / f"rank{r}_final.pt", weights_only=True) for r in range(W)]
    initial = torch.load(record / "initial.pt", weights_only=True)
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0]), "ranks diverged"
    assert any(not torch.equal(finals[0][k], initial[k]) for k in initial), (
        "training did not move the weights"
    )


@pytest.mark.timeout(600)
def test_ddp_cpu_with_gradient_checkpointing_from_the_command_line(tmp_path, tokenizer):
    """`python -m m3lit.train trainer=ddp_cpu model.net.gradient_checkpointing=true`: 2 processes, 2 steps.
    No dense-only stage: find_unused_parameters is off, so neither PyTorch's nor m3lit's notice appears."""
    corpus = tiny_corpus(tmp_path / "corpus", tokenizer)
    run = tmp_path / "run"
    overrides = tiny_run_overrides(
        corpus,
        run,
        "trainer=ddp_cpu",
        "model.net.gradient_checkpointing=true",
        "trainer.max_steps=2",
        "export=false",
        "callbacks.stage_switch.schedule={0:{stage:unified_self_distill,source:labelled}}",
    )
    done = run_train_cli(overrides, timeout=540, threads=1)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "find_unused_parameters" not in output
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2 and state["m3lit"]["stage"] == "unified_self_distill"
