"""``make gpu-check``'s orchestration on CPU (``--dry-run``): every part is recorded, a failing or hanging part
does not stop the next, the budget skips what does not fit, and the JSON and markdown say the same thing."""

from __future__ import annotations

import importlib.util
import json

from scripts import gpu_check


def test_dry_run_records_every_part_after_a_timeout_and_a_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("M3LIT_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setenv("M3LIT_BENCH_DEVICE", "cpu")
    payload = gpu_check.run(
        ["encode", "deepspeed", "gpu_tests"],
        dry_run=True,
        budget_s=300,
        timeouts={"encode": 1, "gpu_tests": 240},
    )
    parts = payload["parts"]
    assert list(parts) == ["encode", "deepspeed", "gpu_tests"]
    assert parts["encode"]["status"].startswith("timeout")  # killed after 1 s, the others still ran
    if importlib.util.find_spec("deepspeed") is None:
        assert (
            parts["deepspeed"]["status"]
            == "failed: deepspeed not installed (dry run: pip install not attempted)"
        )
    assert parts["gpu_tests"]["status"] == "ok", parts["gpu_tests"]
    assert "skipped" in parts["gpu_tests"]["result"]["summary"]  # CPU: the gpu-marked tests skip
    saved = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    assert {n: p["status"] for n, p in saved["parts"].items()} == {n: p["status"] for n, p in parts.items()}
    assert saved["dry_run"] is True
    table = (tmp_path / "gpu_check.md").read_text(encoding="utf-8").splitlines()
    rows = [
        line.split(" | ")[0].strip("| ") for line in table if line.startswith("| ") and "---" not in line
    ][1:]
    assert rows == ["encode", "deepspeed", "gpu_tests"]


def test_parts_that_do_not_fit_the_budget_are_skipped_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("M3LIT_BENCH_RESULTS", str(tmp_path))
    payload = gpu_check.run(["train", "long_step"], dry_run=True, budget_s=5)
    assert all(p["status"].startswith("skipped") for p in payload["parts"].values())
    assert not (tmp_path / "gpu_check_runs").exists()  # nothing started
    assert sum(seconds for seconds, _ in gpu_check.PARTS.values()) <= 480  # the 8-minute budget
