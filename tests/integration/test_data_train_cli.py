"""``python -m m3lit.train`` on a malformed training file stops before training (schema: tests/unit/data)."""

from __future__ import annotations

import pytest
from test_data_schema import GOOD, _write


def test_train_command_exits_before_training_on_bad_input(tmp_path, tokenizer):
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec("m3lit.train") is None:
        pytest.skip("m3lit.train (training helper) not available")
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    good = _write(tmp_path / "pairs.jsonl", [GOOD] * 70)  # > one pairs batch of the tiny experiment (64)
    bad = _write(
        tmp_path / "bad.jsonl", [GOOD, {"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": [1, 2]}]
    )
    args = [
        "experiment=demo", "~corpus", f"data.train_data={bad}", f"data.pairs_data={good}",
        f"model.net.tokenizer={tmp_path / 'tok'}", f"data.cache_dir={tmp_path / 'cache'}", "evaluate.enabled=false",
        "export=false", "logger=csv", "print_config=false", f"hydra.run.dir={tmp_path / 'run'}", "trainer.max_steps=2",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "m3lit.train", *args], capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parents[2], stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode != 0
    assert f"{bad}:line 2: field 'pos_scores': has 2 score(s) but 'pos' has 1 passage(s)" in proc.stderr
    assert "max_steps=2` reached" not in proc.stdout + proc.stderr  # stopped before training
    assert not list((tmp_path / "run").rglob("*.ckpt"))
