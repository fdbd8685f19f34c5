"""``python -m m3lit.train resume=<run dir>`` as a user types it: the run's own config, refusals that leave
the run folder byte-identical, CSV rows kept, epoch/step counters right (m3lit/config/resume.py)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
from train_utils import tiny_corpus, tiny_run_overrides

from m3lit.callbacks.progress import M3ProgressBar
from m3lit.model.training_checkpoint import safe_torch_load

ROOT = Path(__file__).resolve().parents[2]


class CrashFromEnv(L.Callback):
    """Raises at the start of global step ``$M3LIT_TEST_CRASH_AT`` (unset: never), like a kill."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if str(trainer.global_step) == os.environ.get("M3LIT_TEST_CRASH_AT"):
            raise RuntimeError(f"simulated crash at step {trainer.global_step}")


class BarProbe(L.Callback):
    """Appends (epoch, progress-bar total, last batch position) of a run to ``$M3LIT_TEST_PROBE``; the total
    is read when the rich bar reads it: at the epoch start, or at the first batch end of a mid-epoch resume."""

    row: dict | None = None

    def on_train_epoch_start(self, trainer, pl_module):
        self.row = {"epoch": trainer.current_epoch, "total": self._total(trainer)}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.row is None:
            self.row = {"epoch": trainer.current_epoch, "total": self._total(trainer)}
        self.row["position"] = batch_idx + 1

    @staticmethod
    def _total(trainer):
        bar = M3ProgressBar()
        bar._trainer = trainer
        return bar.total_train_batches

    def on_train_end(self, trainer, pl_module):
        if not os.environ.get("M3LIT_TEST_PROBE"):
            return
        with open(os.environ["M3LIT_TEST_PROBE"], "a", encoding="utf-8") as handle:
            handle.write(json.dumps(self.row) + "\n")


def _train(*args: str, crash_at: int | None = None, probe: Path | None = None) -> subprocess.CompletedProcess:
    here = Path(__file__).resolve().parent  # the hydra target test_resume_cli.CrashFromEnv
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(map(str, (ROOT, ROOT / "tests", here))),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("M3LIT_TEST_CRASH_AT", None)
    if crash_at is not None:
        env["M3LIT_TEST_CRASH_AT"] = str(crash_at)
    if probe is not None:
        env["M3LIT_TEST_PROBE"] = str(probe)
    return subprocess.run(
        [sys.executable, "-m", "m3lit.train", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _snapshot(run: Path) -> dict[str, bytes]:
    files = [run / "config.yaml", *sorted((run / ".hydra").iterdir())]
    return {str(p.relative_to(run)): p.read_bytes() for p in files}


def _csv_steps(run: Path) -> list[int]:
    with open(run / "csv" / "metrics.csv", newline="", encoding="utf-8") as handle:
        return [int(float(r["step"])) for r in csv.DictReader(handle) if r.get("train/loss")]


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, tokenizer):
    """A CSV-logged run of 8 steps killed at step 5 (last.ckpt holds step 4)."""
    root = tmp_path_factory.mktemp("resume_cli")
    corpus = tiny_corpus(root / "corpus", tokenizer)
    run = root / "run"
    command = [
        *[o for o in tiny_run_overrides(corpus, run) if o != "~logger"],
        "logger=csv",
        "trainer.max_steps=8",
        "trainer.log_every_n_steps=1",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "callbacks.stage_switch.schedule={0:{stage:dense,source:labelled}}",
        "+callbacks.crash._target_=test_resume_cli.CrashFromEnv",
        "+callbacks.probe._target_=test_resume_cli.BarProbe",
    ]
    (root / "command.json").write_text(json.dumps(command), encoding="utf-8")
    result = _train(*command, crash_at=5, probe=root / "probe.jsonl")
    assert result.returncode != 0 and "simulated crash at step 5" in result.stderr, result.stderr[-3000:]
    assert safe_torch_load(run / "checkpoints" / "last.ckpt")["global_step"] == 4
    return run


def test_refused_resume_names_the_key_and_leaves_the_run_folder_byte_identical(killed_run):
    before = _snapshot(killed_run)
    files_before = sorted(p.name for p in killed_run.iterdir())
    result = _train(f"resume={killed_run}", "trainer.max_steps=12", "model.optimizer.lr=0.5")
    assert result.returncode != 0
    assert "trainer.max_steps: saved 8, now 12" in result.stderr, result.stderr[-2000:]
    assert "model.optimizer.lr: saved 0.002, now 0.5" in result.stderr
    assert "resume.allow_schedule_change=true" in result.stderr
    for bad in ("model=default", "trainer.no_such_key=1"):  # a group choice; a key the run does not have
        result = _train(f"resume={killed_run}", bad)
        assert result.returncode != 0 and bad in result.stderr, result.stderr[-2000:]
    assert _snapshot(killed_run) == before
    assert sorted(p.name for p in killed_run.iterdir()) == files_before  # no wandb/ added to a CSV run


def test_resume_reloads_the_saved_config_keeps_csv_rows_and_counts_right(killed_run):
    rows_before = _csv_steps(killed_run)
    assert rows_before and max(rows_before) >= 3, rows_before
    probe = killed_run.parent / "probe.jsonl"
    # the partial command: only the run folder (+ one safe override); the defaults would be the demo's model
    result = _train(f"resume={killed_run}", "trainer.log_every_n_steps=2", probe=probe)
    assert result.returncode == 0, result.stderr[-3000:]
    assert safe_torch_load(killed_run / "checkpoints" / "last.ckpt")["global_step"] == 8
    rows_after = _csv_steps(killed_run)
    kept = [s for s in rows_before if s <= 4]
    assert rows_after[: len(kept)] == kept  # rows up to the checkpoint are still there, in order
    assert max(rows_after) >= 7 and len(rows_after) > len(kept)
    provenance = json.loads((killed_run / "export" / "m3lit.json").read_text())
    assert (provenance["step"], provenance["epoch"]) == (8, 0)  # an epoch of this corpus is > 8 steps
    epochs = [json.loads(line) for line in probe.read_text().splitlines()]
    assert epochs[-1] == {"epoch": 0, "total": 8, "position": 8}, epochs  # was total 4 (8 - 4) at position 8

    # the older spelling, ckpt_path inside the run folder, is a resume too; a longer schedule needs the flag
    ckpt = killed_run / "checkpoints" / "last.ckpt"
    result = _train(f"ckpt_path={ckpt}", f"hydra.run.dir={killed_run}", "trainer.max_steps=10")
    assert result.returncode != 0 and "trainer.max_steps: saved 8, now 10" in result.stderr
    result = _train(f"resume={killed_run}", "trainer.max_steps=10", "resume.allow_schedule_change=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the schedule is rebuilt from the new config" in result.stderr
    assert safe_torch_load(ckpt)["global_step"] == 10


def test_the_runs_own_command_is_refused_only_for_what_differs(killed_run):
    """The lightning-hydra-template idiom, the run's own command + ``ckpt_path`` (issue 30, item 8): its group
    choices (``experiment=demo``, ``logger=csv``) equal the saved ones in ``.hydra/hydra.yaml`` and pass; only
    the value that differs is named, with both values."""
    command = json.loads((killed_run.parent / "command.json").read_text(encoding="utf-8"))
    before = _snapshot(killed_run)
    result = _train(*command, f"ckpt_path={killed_run / 'checkpoints' / 'last.ckpt'}", "trainer.max_steps=99")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and lines[-1].startswith("error: "), result.stderr[-2000:]
    assert "trainer.max_steps: saved" in lines[-1] and "now 99" in lines[-1], lines[-1]
    assert "1 override(s) change what is trained" in lines[-1], lines[-1]
    assert "experiment" not in lines[-1] and "logger" not in lines[-1] and "group" not in lines[-1]
    assert _snapshot(killed_run) == before
