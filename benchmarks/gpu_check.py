"""``make gpu-check``: one prepared script that proves m3lit's GPU paths on a lent GPU within 8 minutes (issue 14).

    python -m benchmarks.gpu_check [--parts gpu_tests,train,...] [--budget-s 470] [--timeout PART=S ...]
    python -m benchmarks.gpu_check --dry-run          # the same orchestration, tiny sizes, on CPU

Every part runs in its own subprocess (:func:`benchmarks.harness.run_subprocess`: own process group, killed
at its timeout), so one failure or hang loses nothing else. The parts, in order:

* ``gpu_tests``: ``pytest -m gpu`` (the retrieval/score CUDA tests, CUDA dropout and re-rank cap branches);
* ``train``: ``make train``'s command (``python -m m3lit.train``, the offline demo: stage 1 -> stage 2,
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
  random model (the largest absolute difference of every output of :func:`benchmarks.flag_parity.run_api`:
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
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import harness as H
from benchmarks.workload import ModelSpec

__all__ = ["PARTS", "LARGE", "run", "main"]

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
#: XLM-R-large (BGE-M3's backbone) shape, random weights, positions extended to 8192 after building.
LARGE = ModelSpec(vocab_size=250002, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096)
#: XLM-R-base shape (12 x 768) with the offline tokenizer's vocabulary: the ``inference`` part's model.
BASE = ModelSpec(vocab_size=0, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)
#: ``inference``: M3Embedder options per precision, and the largest |GPU - CPU fp32| accepted (measured on an
#: H100: 2.2e-6, 1.5e-3, 1.3e-2).
PRECISIONS = {"fp32": {"use_fp16": False}, "fp16": {"use_fp16": True}, "bf16": {"use_bf16": True}}
PRECISION_LIMITS = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 1e-1}
#: --dry-run's model (seconds on a CPU core).
TINY = ModelSpec(vocab_size=0, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
#: Overrides shrinking the demo run in --dry-run (CPU, a few steps, tiny encoder).
DRY_TRAIN = [
    "trainer=cpu", "trainer.max_steps=4", "model.net.init.hidden_size=32", "model.net.init.num_layers=1",
    "model.net.init.num_heads=2", "model.net.init.intermediate_size=64", "model.net.colbert_dim=16",
]  # fmt: skip
MIN_PART_S = 20
#: --dry-run multiplies the part timeouts and the default budget by this (2 shared CPU cores, not a GPU).
DRY_RUN_SCALE = 4


# ---------------------------------------------------------------------------------------------- helpers
def _cli(args: list[str], log: Path) -> tuple[int, str]:
    """Run ``python <args>`` from the repository root (offline env), output to ``log``; (exit code, tail)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}
    with open(log, "w", encoding="utf-8") as out:
        rc = subprocess.run(
            [sys.executable, *args], cwd=H.REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return rc, "\n".join(lines[-15:])


def _trainer(dry_run: bool, preset: str) -> str:
    return "trainer=cpu" if dry_run else f"trainer={preset}"


def _train_args(run_dir: Path, dry_run: bool, preset: str, *extra: str) -> list[str]:
    shrink = DRY_TRAIN if dry_run else [_trainer(dry_run, preset)]
    return ["-m", "m3lit.train", f"hydra.run.dir={run_dir}", "print_config=false", *shrink, *extra]


def _failed(reason: str, **info) -> dict:
    return {"ok": False, "reason": reason, **info}


# ---------------------------------------------------------------------------------------------- parts
def part_gpu_tests(dry_run: bool, out_dir: str) -> dict:
    """``pytest -m gpu`` (dry run: one GPU test file, which skips on CPU)."""
    target = ["tests/test_scores_gpu.py"] if dry_run else ["tests"]
    rc, tail = _cli(["-m", "pytest", "-q", "-m", "gpu", *target], Path(out_dir) / "gpu_tests.log")
    summary = next(
        (line for line in reversed(tail.splitlines()) if " in " in line and "=" not in line[:1]), tail[-200:]
    )
    return {"ok": rc == 0, "reason": "" if rc == 0 else f"pytest exit {rc}", "summary": summary, "tail": tail}


def part_train(dry_run: bool, out_dir: str) -> dict:
    """``make train`` on CUDA: the demo end to end; evaluation results and the export must exist."""
    run_dir = Path(out_dir) / "train"
    extra = ["evaluate.enabled=false"] if dry_run else []
    rc, tail = _cli(_train_args(run_dir, dry_run, "gpu", *extra), Path(out_dir) / "train.log")
    info = {
        "run_dir": str(run_dir),
        "tail": tail,
        "export": sorted(p.name for p in (run_dir / "export").glob("*")),
    }
    results = run_dir / "results.json"
    if results.is_file():
        info["results"] = json.loads(results.read_text(encoding="utf-8"))
    if rc != 0:
        return _failed(f"m3lit.train exit {rc}", **info)
    if not info["export"] or (not dry_run and "results" not in info):
        return _failed("no export/ or no results.json", **info)
    return {"ok": True, **info}


def part_real_model(dry_run: bool, out_dir: str, steps: int = 300) -> dict:
    """The real pretrained model's fine-tuning experiment (``bible_full``), bf16-mixed, gradient cache."""
    config = H.REPO / "configs" / "experiment" / "bible_full.yaml"
    if not config.is_file():
        return _failed(f"{config.relative_to(H.REPO)} does not exist (the experiment is not written yet)")
    run_dir = Path(out_dir) / "real_model"
    args = [
        "experiment=bible_full", "model.sub_batch_mode=gradcache",
        f"trainer.max_steps={2 if dry_run else steps}",
        *([] if dry_run else ["trainer.precision=bf16-mixed"]),
    ]  # fmt: skip
    rc, tail = _cli(_train_args(run_dir, dry_run, "gpu", *args), Path(out_dir) / "real_model.log")
    results = run_dir / "results.json"
    info = {"run_dir": str(run_dir), "tail": tail}
    if results.is_file():
        info["results"] = json.loads(results.read_text(encoding="utf-8"))
    return {"ok": rc == 0, "reason": "" if rc == 0 else f"m3lit.train exit {rc}", **info}


def part_long_step(
    dry_run: bool, out_dir: str, length: int = 8192, group: int = 8, budget_s: float = 130.0
) -> dict:
    """8192-token stage-2 steps on the XLM-R-large shape: figures at batch 1, a profile, the largest batch."""
    from benchmarks.device import bench_device, measure_matmul_peak
    from benchmarks.flops import EncoderShape, step_flops
    from benchmarks.long_docs import QUERY_LEN, long_model, long_step_overrides
    from benchmarks.profiling import shares

    start = time.perf_counter()
    spec, length, group = (TINY, 256, 2) if dry_run else (LARGE, length, group)
    folder = long_model(spec)
    device = bench_device()
    peak = measure_matmul_peak(device, seconds=1.0 if not dry_run else 0.2)
    shape = EncoderShape(spec.hidden_size, spec.intermediate_size, spec.num_layers, spec.hidden_size)

    def attempt(batch: int, steps: int, timeout: float) -> H.RunResult:
        o = long_step_overrides(folder, length, batch=batch, group=group, steps=steps)
        warmup = 1 if steps > 1 else 0
        cmd = H.m3_command("benchmarks.train:m3_train", overrides=o, warmup_steps=warmup)
        return H.run_subprocess(cmd, timeout_s=timeout)

    def figures(res: H.RunResult, batch: int) -> dict:
        times = res.result["step_times"] or res.result["warmup_times"]
        step_s = sorted(times)[len(times) // 2]
        flops = step_flops(shape, [QUERY_LEN] * batch, [length] * (batch * group))["total"]
        tokens = (res.result["tokens_per_step"] or [batch * (QUERY_LEN + group * length)])[0]
        return {
            "batch": batch, "step_s": step_s, "tokens_per_s": tokens / step_s, "flops_per_step": flops,
            "mfu_vs_measured_bf16": flops / step_s / peak,
            "peak_mb": res.result.get("peak_gpu_mb", res.result.get("peak_rss_mb")),
        }  # fmt: skip

    first = attempt(1, 3, budget_s)
    out = {
        "spec": spec.__dict__,
        "length": length,
        "group": group,
        "gemm_peak_flops": peak,
        "device": str(device),
    }
    if not first.ok:
        return _failed(f"batch 1: {first.status}", **out, tail=first.log_tail)
    out["batch1"] = figures(first, 1)
    left = budget_s - (time.perf_counter() - start)
    if left > 3 * first.wall_s:  # one profiled step at batch 1 (where the time goes)
        o = long_step_overrides(folder, length, batch=1, group=group, steps=3)
        prof = H.run_subprocess(H.m3_command("benchmarks.mfu:m3_profile", overrides=o), timeout_s=left / 2)
        out["profile"] = (
            {**prof.result, "shares": shares(prof.result)} if prof.ok else {"failure": prof.status}
        )
    fits, batch, last = 1, 2, first
    while True:  # doubling search: one step per try, stop at the first failure or when time runs out
        left = budget_s - (time.perf_counter() - start)
        predicted = last.wall_s * batch / max(1, batch // 2)
        if left < predicted:
            out["search_stopped"] = f"time: batch {batch} predicted {predicted:.0f} s, {left:.0f} s left"
            break
        res = attempt(batch, 1, left)
        if not res.ok:
            out["search_stopped"] = f"batch {batch}: {res.status}"
            break
        fits, last = batch, res
        out[f"batch{batch}"] = figures(res, batch)
        batch *= 2
    out["largest_batch_fits"] = fits
    return {"ok": True, **out}


def _run_and_resume(dry_run: bool, out_dir: str, preset: str, *extra: str) -> dict:
    """Train a few steps under ``preset`` (checkpoint at the end), resume for more steps, export."""
    run_dir = Path(out_dir) / preset
    steps = ["trainer.max_steps=4"] if not dry_run else []
    common = ["evaluate.enabled=false", "data.demo=true", *extra]
    rc, tail = _cli(_train_args(run_dir, dry_run, preset, *steps, *common), Path(out_dir) / f"{preset}.log")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    info: dict = {"run_dir": str(run_dir), "train_tail": tail}
    if rc != 0 or not ckpt.exists():
        return _failed(f"train exit {rc}, checkpoint {'present' if ckpt.exists() else 'missing'}", **info)
    resume = [
        "-m",
        "m3lit.train",
        f"resume={run_dir}",
        "trainer.max_steps=6",
        "resume.allow_schedule_change=true",
    ]
    rc, tail = _cli(resume, Path(out_dir) / f"{preset}-resume.log")
    info["resume_tail"] = tail
    if rc != 0:
        return _failed(f"resume exit {rc}", **info)
    export = Path(out_dir) / f"{preset}-export"
    rc, tail = _cli(
        ["-m", "m3lit.export", f"model={ckpt}", f"output_dir={export}"],
        Path(out_dir) / f"{preset}-export.log",
    )
    info["export_tail"], info["export"] = tail, sorted(p.name for p in export.glob("*"))
    if rc != 0 or not info["export"]:
        return _failed(f"export exit {rc}", **info)
    return {"ok": True, **info}


def part_fsdp(dry_run: bool, out_dir: str) -> dict:
    """``trainer=fsdp`` on one GPU: train + checkpoint, resume, export (dry run: ``trainer=cpu``)."""
    return _run_and_resume(dry_run, out_dir, "fsdp")


def part_deepspeed(dry_run: bool, out_dir: str) -> dict:
    """``trainer=deepspeed`` when it imports or installs (``pip install deepspeed``); else the reason."""
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        if dry_run:
            return _failed("deepspeed not installed (dry run: pip install not attempted)")
        pip = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "deepspeed"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if pip.returncode != 0:
            return _failed("pip install deepspeed failed", pip_tail=(pip.stdout + pip.stderr)[-1500:])
    return _run_and_resume(dry_run, out_dir, "deepspeed", "model.sub_batch_mode=split")


def part_encode(dry_run: bool, out_dir: str) -> dict:
    """``M3Embedder.encode`` passages/s at 512 and 8192 tokens (all three outputs)."""
    from benchmarks.long_docs import long_model
    from benchmarks.workload import write_texts

    spec = TINY if dry_run else LARGE
    folder = long_model(spec)
    points = ((64, 16, 8), (256, 4, 4)) if dry_run else ((512, 512, 128), (8192, 32, 8))  # length, n, batch
    out: dict = {"spec": spec.__dict__}
    for length, n, batch in points:
        texts = str(write_texts(f"gpucheck-{n}x{length}", [length - 2] * n, seed=21))
        task = dict(model_dir=folder, texts=texts, batch_size=batch, max_length=length, warmup=batch)
        res = H.run_subprocess(H.m3_command("benchmarks.encode:m3_encode", **task), timeout_s=600)
        if not res.ok:
            return _failed(f"encode at {length}: {res.status}", **out, tail=res.log_tail)
        r = res.result
        out[f"len{length}"] = {
            "passages_per_s": r["texts"] / r["seconds"], "tokens_per_s": r["tokens"] / r["seconds"],
            "passages": r["texts"], "batch_size": batch, "peak_mb": r.get("peak_gpu_mb", r["peak_rss_mb"]),
        }  # fmt: skip
    return {"ok": True, **out}


def part_inference(dry_run: bool, out_dir: str) -> dict:
    """``M3Embedder`` on the GPU in each precision against CPU fp32, then the out-of-memory back-off
    (dry run: CPU fp32 against itself, no back-off)."""
    import numpy as np

    from benchmarks.device import bench_device
    from benchmarks.flag_parity import api_inputs, compare, run_api
    from benchmarks.workload import model_dir
    from m3lit import M3Embedder

    spec = TINY if dry_run else BASE
    folder, device = str(model_dir(spec)), bench_device().type
    inputs = api_inputs(n_texts=48, max_length=256)
    reference = run_api(M3Embedder(folder, use_fp16=False, devices="cpu"), inputs)
    out: dict = {"spec": spec.__dict__, "device": device, "max_abs_diff": {}}
    for label, kwargs in PRECISIONS.items() if device == "cuda" else [("fp32", PRECISIONS["fp32"])]:
        embedder = M3Embedder(folder, devices=device, **kwargs)
        diffs = compare(run_api(embedder, inputs), reference)
        dense = embedder.encode(inputs["texts"][:4], return_colbert_vecs=True)
        if dense["dense_vecs"].dtype != np.float32 or dense["colbert_vecs"][0].dtype != np.float32:
            return _failed(f"{label}: outputs are not float32", **out)
        out["max_abs_diff"][label] = {"max": max(diffs.values()), **diffs}
    above = [k for k, v in out["max_abs_diff"].items() if v["max"] > PRECISION_LIMITS[k]]
    if above:
        return _failed(f"above the limits {PRECISION_LIMITS}: {above}", **out)
    if device == "cuda":
        out["oom_backoff"] = _oom_backoff(folder)
        if out["oom_backoff"]["final_batch_size"] >= out["oom_backoff"]["requested_batch_size"]:
            return _failed("no out-of-memory back-off happened", **out)
    return {"ok": True, **out}


def _oom_backoff(folder: str, n: int = 1024, length: int = 512) -> dict:
    """Encode ``n`` texts of ``length`` tokens in one batch with all but 3 GiB of the GPU held."""
    import numpy as np
    import torch

    from benchmarks.workload import read_texts, write_texts
    from m3lit import M3Embedder
    from m3lit.inference.encoding import encode_texts

    texts = read_texts(write_texts(f"gpucheck-{n}x{length}", [length - 2] * n, seed=21))
    embedder = M3Embedder(folder, use_fp16=True, devices="cuda")
    small = embedder.encode(texts, batch_size=32, max_length=length)["dense_vecs"]
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(max(0, free - (3 << 30)), dtype=torch.uint8, device="cuda")
    try:
        result = encode_texts(embedder._replica("cuda"), texts, batch_size=n, max_length=length)
    finally:
        del hog
        torch.cuda.empty_cache()
    return {
        "texts": n, "requested_batch_size": n, "final_batch_size": result.batch_size,
        "max_abs_diff_vs_batch_32": float(np.abs(result.dense - small).max()),
    }  # fmt: skip


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
        res = H.run_subprocess(H.m3_command(f"benchmarks.gpu_check:part_{name}", **kwargs), timeout_s=timeout)
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
