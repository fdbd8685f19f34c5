"""m3lit's ``M3Embedder`` against FlagEmbedding's ``BGEM3FlagModel``: every output agrees within 1e-5.

A tiny random exported model (hidden 64, 2 layers, ColBERT 64 x 64 as bge-m3, :func:`benchmarks.api_calls.
build_model`) encodes and scores the same 64 texts with both libraries, fp32 on CPU, through the same calls
(:func:`benchmarks.api_calls.run_api`). FlagEmbedding 1.4.2 needs transformers 4.x, so its side runs in
``.venv-flag`` (``make flag-env``, or ``$M3LIT_FLAG_PYTHON``) through :mod:`benchmarks.flag_worker`; without
that environment the test is skipped with the reason. ``make flag-parity`` runs it and prints the table of
docs/inference.md (Parity with FlagEmbedding).
"""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from benchmarks import harness as H
from benchmarks.api_calls import TARGET, api_inputs, build_model, compare, load_results, run_api


def _flag_missing() -> str:
    """Why FlagEmbedding's side cannot run here, or "" when it can."""
    if not H.flag_available():
        return f"{H.FLAG_PYTHON} not found: create it with `make flag-env` (or set M3LIT_FLAG_PYTHON)"
    probe = subprocess.run([str(H.FLAG_PYTHON), "-c", "import FlagEmbedding"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`import FlagEmbedding` fails in {H.FLAG_PYTHON}: {probe.stderr.strip().splitlines()[-1:]}"
    return ""


pytestmark = pytest.mark.flag


@pytest.fixture(scope="module")
def flag_python() -> None:
    reason = _flag_missing()
    if reason:
        pytest.skip(reason)


def test_m3embedder_matches_bgem3flagmodel_on_every_output(flag_python, tmp_path, capsys):
    from m3lit import M3Embedder

    threads = 2
    torch.set_num_threads(threads)
    spec = api_inputs(n_texts=64, max_length=256)
    build_model(tmp_path / "model")
    ours = run_api(M3Embedder(str(tmp_path / "model"), use_fp16=False, devices="cpu"), spec)
    (tmp_path / "inputs.json").write_text(json.dumps(spec), encoding="utf-8")
    task = {"model_dir": str(tmp_path / "model"), "inputs": str(tmp_path / "inputs.json"),
            "output": str(tmp_path / "flag.npz"), "threads": threads}  # fmt: skip
    run = H.run_subprocess(H.flag_command("parity", **task), timeout_s=900)
    assert run.ok, f"FlagEmbedding side: {run.status}\n{run.log_tail}"
    diffs = compare(ours, load_results(task["output"]))
    with capsys.disabled():
        print(f"\n{'output':44s} max |m3lit - FlagEmbedding|")
        for name, value in diffs.items():
            print(f"{name:44s} {value:.3e}  {'ok' if value <= TARGET else 'ABOVE TARGET'}")
    assert {name: value for name, value in diffs.items() if value > TARGET} == {}
