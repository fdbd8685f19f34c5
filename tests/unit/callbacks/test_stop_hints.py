"""What a stopped or resumed run tells the user (issue 30 item 7): SIGTERM names ``resume=<run dir>``, and a
resumed CSV log is not announced as deleted."""

from __future__ import annotations

import csv
import logging
import os
import signal
import warnings

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from train_utils import tiny_corpus, tiny_run_overrides

from m3lit.config.compose import compose
from m3lit.config.resume import keep_csv_rows
from m3lit.model.training_checkpoint import checkpoint_step
from m3lit.train import train


class TermAt(L.Callback):
    """Sends this process SIGTERM during global step 4, as a cluster's time limit would (Lightning stops
    after that step: the 5th)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 4:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tokenizer):
    return tiny_corpus(tmp_path_factory.mktemp("corpus"), tokenizer)


def test_sigterm_names_the_checkpoint_and_the_resume_command(corpus, tmp_path, caplog):
    run = tmp_path / "run"
    cfg = compose(
        tiny_run_overrides(
            corpus,
            run,
            "trainer.max_steps=6",
            "callbacks.model_checkpoint.every_n_train_steps=4",
            "+callbacks.term._target_=test_stop_hints.TermAt",
            "export=false",
        )
    )
    with caplog.at_level(logging.WARNING), pytest.raises(SIGTERMException):
        train(cfg)
    hints = [r.getMessage() for r in caplog.records if r.name == "m3lit.callbacks.checkpoint"]
    last = run / "checkpoints" / "last.ckpt"
    assert checkpoint_step(last) == 4
    assert hints == [
        f"training stopped by SIGTERM at global step 5; the last checkpoint, {last}, holds step 4 (later steps "
        f"run again). Continue with: python -m m3lit.train resume={run}"
    ]


def test_a_resumed_csv_log_keeps_its_rows_without_lightnings_deletion_warning(tmp_path, caplog):
    logger = CSVLogger(tmp_path, name="csv", version="")
    path = tmp_path / "csv" / "metrics.csv"
    path.parent.mkdir(parents=True)
    path.write_text("step,train/loss\n0,1.0\n1,0.9\n2,0.8\n3,0.7\n", encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        keep_csv_rows([logger], resumed_step=1)
    assert not [w for w in caught if "will be deleted" in str(w.message)], [str(w.message) for w in caught]
    with open(path, newline="") as handle:
        assert [r["step"] for r in csv.DictReader(handle)] == ["0", "1"]
    said = [r.getMessage() for r in caplog.records if "resume" in r.getMessage()]
    assert said == [
        f"resume: kept 2 rows of {path} (steps <= 1); the rows of later steps are dropped, as those steps run again"
    ]
