"""A training file scored by ``python -m m3lit.corpora.teacher_scores`` trains with knowledge distillation
(``data.use_teacher_scores=true``): two steps of ``experiment=demo`` on it, as a user runs them; the same file
with one line's scores broken stops with that file, line and field, before any training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from train_utils import run_train_cli, tiny_corpus, tiny_cross_encoder, tiny_run_overrides

ROOT = Path(__file__).resolve().parents[2]


def test_a_scored_file_trains_with_distillation_and_bad_scores_are_named(tmp_path, tokenizer, tiny_config):
    corpus = tiny_corpus(tmp_path / "corpus", tokenizer)
    teacher = tmp_path / "reranker"
    tiny_cross_encoder(teacher, tiny_config, tokenizer)
    scored = tmp_path / "scored.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "-m", "m3lit.corpora.teacher_scores", f"model={teacher}",
               f"input={corpus['train']}", f"output={scored}", "device=cpu", "progress=false"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in scored.read_text().splitlines()]
    assert all(len(r["pos_scores"]) == 1 and len(r["neg_scores"]) == 3 for r in rows)

    schedule = "callbacks.stage_switch.schedule={0:{stage:unified_self_distill,source:labelled}}"
    overrides = [*tiny_run_overrides(corpus, tmp_path / "run", "trainer.max_steps=2", schedule),
                 f"data.train_data={scored}", "data.use_teacher_scores=true"]  # fmt: skip
    run = run_train_cli(overrides, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]

    rows[2]["neg_scores"] = rows[2]["neg_scores"][:2]  # misaligned with its 3 negatives
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run = run_train_cli([*overrides[:-2], f"data.train_data={bad}"], timeout=600)
    last = [line for line in run.stderr.splitlines() if line.strip()][-1]
    assert run.returncode == 1
    assert last.startswith(f"error: {bad}:line 3: field 'neg_scores': has 2 score(s) but 'neg' has 3"), last
