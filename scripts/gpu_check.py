"""``make gpu-check``: one prepared script that proves m3lit's GPU paths on a lent GPU within 8 minutes (issue 14).

    python -m scripts.gpu_check [--parts gpu_tests,train,...] [--budget-s 470] [--timeout PART=S ...]
    python -m scripts.gpu_check --dry-run          # the same orchestration, tiny sizes, on CPU

Every part runs in its own subprocess (:func:`benchmarks.harness.run_subprocess`: own process group, killed
at its timeout), so one failure or hang loses nothing else. The parts (``part_<name>`` of
:mod:`scripts.gpu_parts`), in order:

* ``gpu_tests``: ``pytest -m gpu`` (the retrieval/score CUDA tests, CUDA dropout and re-rank cap branches);
* ``train``: ``python -m m3lit.train experiment=demo`` (the tiny offline demo: stage 1 -> stage 2,
  evaluation, export) with ``trainer=gpu``; checks ``results.json`` and ``export/``;
* ``real_model``: ``python -m m3lit.train experiment=bible_full trainer=gpu trainer.precision=bf16-mixed
  model.sub_batch_mode=gradcache trainer.max_steps=300``: the real multilingual model's fine-tuning and its
  evaluation (fails cleanly, naming the file, while that experiment does not exist);
* ``long_step``: stage-2 steps with 8192-token passages on an XLM-R-large-shaped random model (24 layers,
  hidden 1024, 16 heads, 250,002 vocabulary, positions extended 514 -> 8194), checkpointing + gradient
  cache, group 8: peak GPU memory, tokens/s, MFU against the measured bf16 GEMM peak, a profile of one
  step, and the largest batch that fits (doubling until out of memory or out of time);
* ``fsdp``: ``trainer=fsdp`` for a few steps with a checkpoint, a resume from it (``resume=<run dir>``,
  more steps, ``resume.allow_schedule_change=true``) and an export from the checkpoint;
* ``deepspeed``: the same with ``trainer=deepspeed`` (``sub_batch_mode=split``) when ``deepspeed`` imports
  or ``pip install deepspeed`` succeeds; otherwise the reason;
* ``encode``: ``M3Embedder.encode`` throughput (passages/s, tokens/s) at 512 and 8192 tokens on the
  XLM-R-large-shaped model;
* ``inference``: ``M3Embedder`` on the GPU in fp32, fp16 and bf16 against CPU fp32 on an XLM-R-base-shaped
  random model (the largest absolute difference of every output of :func:`benchmarks.api_calls.run_api`:
  dense, lexical weights, ColBERT vectors, ``compute_score``, ...), and the out-of-memory back-off: with all
  but 3 GiB of the GPU held, encoding 1024 texts of 512 tokens in one batch must shrink the batch and give
  the vectors of batches of 32.

Each part gets ``min(its timeout, what is left of --budget-s)``; a part with under 20 s left is skipped and
recorded as such. Results: ``bench_results/gpu_check.json`` (every part's status, wall time, figures and
log tail) and ``bench_results/gpu_check.md`` (one table). ``--dry-run`` runs every part at tiny sizes on
the CPU (``--device cpu``), with ``trainer=cpu`` in place of gpu/fsdp/deepspeed: it tests the script, not
the GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchmarks import harness as H

__all__ = ["PARTS", "run", "main"]

#: part -> (timeout in s on a GPU, what it proves). Their sum is the 8-minute budget.
PARTS: dict[str, tuple[int, str]] = {
    "gpu_tests": (45, "pytest -m gpu"),
    "train": (80, "make train (python -m m3lit.train trainer=gpu): demo, evaluation, export"),
    "real_model": (100, "experiment=bible_full, bf16-mixed, gradient cache, 300 steps, evaluation"),
    "long_step": (115, "8192-token stage-2 step, XLM-R-large shape: memory, tokens/s, MFU, largest batch"),
    "fsdp": (50, "trainer=fsdp: train, checkpoint, resume, export"),
    "deepspeed": (25, "trainer=deepspeed: train, checkpoint, resume, export (if installable)"),
    "encode": (30, "encode throughput at 512 and 8192 tokens"),
    "inference": (25, "M3Embedder fp32/fp16/bf16 vs CPU fp32; out-of-memory back-off"),
}
MIN_PART_S = 20
#: --dry-run multiplies the part timeouts and the default budget by this (2 shared CPU cores, not a GPU).
DRY_RUN_SCALE = 4


# ---------------------------------------------------------------------------------------------- run
def _figures(name: str, result: dict) -> str:
    """The one-line summary of a part's result for the markdown table."""
    if name == "gpu_tests":
        return result.get("summary", "")
    if name == "long_step" and "batch1" in result:
        b1 = result["batch1"]
        text = (f"B=1 G={result['group']}: {b1['step_s']:.2f} s/step, {b1['tokens_per_s']:.0f} tokens/s, "
                f"{b1['peak_mb']:.0f} MB, MFU {100 * b1['mfu_vs_measured_bf16']:.1f}% of {result['gemm_peak_flops'] / 1e12:.2f} "
                f"TFLOP/s; largest batch {result.get('largest_batch_fits')} ({result.get('search_stopped', '')})")  # fmt: skip
        return text + (
            f"; profile: {result['profile']['shares']}" if "shares" in result.get("profile", {}) else ""
        )
    if name == "encode":
        return "; ".join(
            f"{k[3:]} tokens: {v['passages_per_s']:.1f} passages/s"
            for k, v in result.items()
            if k.startswith("len")
        )
    if name == "inference" and "max_abs_diff" in result:
        text = ", ".join(f"{k} {v['max']:.1e}" for k, v in result["max_abs_diff"].items())
        oom = result.get("oom_backoff")
        return f"max abs diff GPU vs CPU fp32: {text}" + (
            f"; OOM back-off {oom['requested_batch_size']} -> {oom['final_batch_size']}" if oom else ""
        )
    if name in ("train", "real_model") and isinstance(result.get("results"), dict):
        return "results.json written"
    return ""


def run(
    parts: list[str] | None = None,
    dry_run: bool = False,
    budget_s: float = 470.0,
    timeouts: dict[str, float] | None = None,
) -> dict:
    """Run the parts one after another within ``budget_s``; write ``gpu_check.json`` and ``gpu_check.md``."""
    parts = parts or list(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    out_dir = H.results_dir() / "gpu_check_runs"
    start, records = time.perf_counter(), {}
    for name in parts:
        left = budget_s - (time.perf_counter() - start)
        default = PARTS[name][0] * (DRY_RUN_SCALE if dry_run else 1)
        timeout = min((timeouts or {}).get(name, default), left)
        if timeout < MIN_PART_S and name not in (timeouts or {}):
            records[name] = {
                "status": f"skipped: {left:.0f} s of the budget left",
                "wall_s": 0.0,
                "result": {},
            }
            continue
        kwargs = {"dry_run": dry_run, "out_dir": str(out_dir)}
        if name == "long_step":
            kwargs["budget_s"] = max(10.0, timeout - 10)
        print(f"  gpu_check {name} (timeout {timeout:.0f} s)", file=sys.stderr, flush=True)
        res = H.run_subprocess(H.m3_command(f"scripts.gpu_parts:part_{name}", **kwargs), timeout_s=timeout)
        status = res.status
        if res.ok and not res.result.get("ok", False):
            status = f"failed: {res.result.get('reason', '')}"
        records[name] = {"status": status, "wall_s": round(res.wall_s, 1), "timeout_s": round(timeout), "result": res.result,
                         "log_tail": res.log_tail, "what": PARTS[name][1]}  # fmt: skip
    rows = [
        [name, r["status"][:160], f"{r['wall_s']:.0f}", _figures(name, r["result"]).replace("|", "/")]
        for name, r in records.items()
    ]
    table = H.format_table(["part", "status", "wall s", "figures"], rows)
    env = H.environment(False)
    header = f"# gpu_check{' (dry run, CPU)' if dry_run else ''}\n\n{env.get('gpu', env['cpu'])}, torch {env['torch']}, m3lit {env['m3lit_git']}, {env['date']}; total {time.perf_counter() - start:.0f} s\n\n"
    payload = {"benchmark": "gpu_check", "dry_run": dry_run, "budget_s": budget_s, "env": env, "parts": records,
               "total_s": time.perf_counter() - start}  # fmt: skip
    H.save_json("gpu_check", payload)
    (H.results_dir() / "gpu_check.md").write_text(header + table + "\n", encoding="utf-8")
    print(header + table)
    return payload


def _timeouts(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, _, seconds = item.partition("=")
        out[name] = float(seconds)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="", help=f"comma list (default all: {','.join(PARTS)})")
    parser.add_argument(
        "--dry-run", action="store_true", help="tiny sizes and trainer=cpu: test the script on CPU"
    )
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default=None, help="benchmark device (dry run: cpu)"
    )
    parser.add_argument(
        "--budget-s", type=float, default=470.0, help="total seconds for all parts (default 470)"
    )
    parser.add_argument(
        "--timeout", action="append", default=[], metavar="PART=S", help="override a part's timeout"
    )
    args = parser.parse_args(argv)
    device = args.device or ("cpu" if args.dry_run else None)
    if device:
        os.environ["M3LIT_BENCH_DEVICE"] = device  # children inherit it (benchmarks.device.bench_device)
    parts = [p for p in args.parts.split(",") if p] or None
    budget = args.budget_s or 470.0 * (DRY_RUN_SCALE if args.dry_run else 1)
    payload = run(parts, args.dry_run, budget, _timeouts(args.timeout))
    failed = [n for n, r in payload["parts"].items() if r["status"] != "ok"]
    if failed:
        print("not ok: " + ", ".join(failed))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
