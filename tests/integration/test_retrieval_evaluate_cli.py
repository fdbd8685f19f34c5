"""``python -m m3lit.evaluate`` as a user types it writes the three files (``write_reports`` and the
in-process checks: tests/unit/retrieval/test_evaluate.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_evaluate import FAST, METRICS, assert_png

from m3lit.retrieval import DEFAULT_MODES
from m3lit.retrieval.report.provenance import read_results


def test_cli_writes_the_three_files(export_dir, tiny_beir_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "m3lit.evaluate",
        f"model={export_dir}",
        f"data={tiny_beir_dir}",
        f"output_dir={out}",
        *FAST,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).resolve().parents[2]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results, settings = read_results(out / "results.json")
    assert list(results) == list(DEFAULT_MODES) and settings["modes"] == list(DEFAULT_MODES)
    for mode, row in results.items():
        assert set(row) == METRICS, mode
        assert all(0.0 <= v <= 1.0 for v in row.values())
    table = (out / "results.md").read_text()
    for label in ("| Dense |", "| Sparse |", "| Multi-vec |", "| Dense+Sparse |", "| All |", "| BM25 |"):
        assert label in table
    assert (
        f"| BM25 | {100 * results['bm25']['ndcg@10']:.1f} | {100 * results['bm25']['recall@100']:.1f} |"
        in table
    )
    assert table in proc.stdout
    assert_png(out / "results.png")
