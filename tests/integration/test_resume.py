"""Checkpoints: a run killed mid-way and resumed from ``last.ckpt`` ends with the same weights, bit for bit,
as an uninterrupted run (CPU, deterministic mode); a NaN loss stops the run naming the step and the loss
part, keeping the last good checkpoint."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from train_utils import tiny_corpus, tiny_run_overrides

from m3lit.config.compose import compose
from m3lit.model.training_checkpoint import safe_torch_load
from m3lit.train import train
from m3lit.training.objective import NonFiniteLossError


class CrashAt(L.Callback):
    """Raises at the start of global step ``step`` (a kill: no checkpoint is written on the way out)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")


class PoisonAt(L.Callback):
    """Sets the ColBERT head's bias to NaN at the start of global step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.model.colbert_head.linear.bias.fill_(float("nan"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tokenizer):
    return tiny_corpus(tmp_path_factory.mktemp("corpus"), tokenizer)


#: Crosses both stage switches and a data-source switch; exact gradient cache with dropout (RNG replay).
RESUME_RUN = (
    "trainer.max_steps=8",
    "trainer.deterministic=true",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "callbacks.stage_switch.schedule={0:{stage:dense,source:pairs},3:{stage:unified,source:labelled},6:unified_self_distill}",
    "model.sub_batch_mode=gradcache",
    "model.sub_batch_size=2",
    "model.net.init.dropout=0.1",
)


def _weights(objects) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in objects["model"].state_dict().items()}


def test_kill_and_resume_equals_uninterrupted_run_bit_for_bit(corpus, tmp_path):
    _, full = train(compose(tiny_run_overrides(corpus, tmp_path / "full", *RESUME_RUN)))
    assert full["trainer"].global_step == 8

    with pytest.raises(RuntimeError, match="simulated crash at step 5"):
        train(
            compose(
                tiny_run_overrides(
                    corpus,
                    tmp_path / "killed",
                    *RESUME_RUN,
                    "+callbacks.crash._target_=test_resume.CrashAt",
                    "+callbacks.crash.step=5",
                )
            )
        )
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert safe_torch_load(last)["global_step"] == 4  # the last checkpoint before the kill

    _, resumed = train(
        compose(tiny_run_overrides(corpus, tmp_path / "resumed", *RESUME_RUN, f"ckpt_path={last}"))
    )
    assert resumed["trainer"].global_step == 8
    assert resumed["model"].stage == "unified_self_distill"
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed weights differ from the uninterrupted run: {different[:5]}"
    # and training did change the weights (the comparison is not vacuous)
    ckpt0 = safe_torch_load(tmp_path / "killed" / "checkpoints" / "last.ckpt")["state_dict"]
    assert any(not torch.equal(ckpt0[k], a[k]) for k in a)


def test_nan_loss_stops_naming_step_and_part_and_keeps_last_good_checkpoint(corpus, tmp_path):
    overrides = tiny_run_overrides(
        corpus,
        tmp_path,
        "trainer.max_steps=6",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        "callbacks.stage_switch.schedule={0:{stage:unified_self_distill,source:labelled}}",
        "+callbacks.poison._target_=test_resume.PoisonAt",
        "+callbacks.poison.step=3",
    )
    with pytest.raises(NonFiniteLossError) as error:
        train(compose(overrides))
    message = str(error.value)
    assert "global step 3" in message
    bad_parts = message.split("loss part(s) ")[1].split(" =")[0]
    assert bad_parts == "colbert, inter, self_distill", message  # dense and sparse stay finite
    ckpt = safe_torch_load(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
