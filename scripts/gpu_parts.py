"""The parts of ``make gpu-check`` (:mod:`scripts.gpu_check`): one function each, each run in a subprocess.

Every ``part_<name>(dry_run, out_dir)`` returns a dict with ``ok`` (and ``reason`` when not ok) plus its
figures; :mod:`scripts.gpu_check` runs them through :func:`benchmarks.harness.run_subprocess` (its own
process group, killed at its timeout) and writes the table. ``dry_run`` shrinks each part to tiny sizes
on the CPU. What each part proves is in :mod:`scripts.gpu_check`'s docstring.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import harness as H
from benchmarks.train import m3_overrides
from benchmarks.workload import ModelSpec, model_dir, train_jsonl

__all__ = [
    "BASE",
    "LARGE",
    "TINY",
    "long_model",
    "long_step_overrides",
    "part_deepspeed",
    "part_encode",
    "part_fsdp",
    "part_gpu_tests",
    "part_inference",
    "part_long_step",
    "part_real_model",
    "part_train",
]

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
#: Query length of the long-passage steps.
QUERY_LEN = 64
#: Longest input after extension (XLM-R: 8194 position rows = 8192 tokens + the padding offset of 2).
EXTENDED_LENGTH = 8192


def long_model(spec: ModelSpec) -> str:
    """Folder of the random encoder of ``spec`` (built at 512 tokens) with positions extended to 8192."""
    return str(model_dir(spec, extend_to=EXTENDED_LENGTH))


def long_step_overrides(folder: str, length: int, *, batch: int, group: int, steps: int) -> list[str]:
    """Config overrides of stage-2 steps (unified + self-distillation, paper §3.3) at passage length
    ``length``: gradient checkpointing, the exact gradient cache, sub-batch size by length (spec §4.5)."""
    data = str(
        train_jsonl(
            2 * batch, query_tokens=QUERY_LEN + 16, passage_tokens=length + 16, n_neg=group - 1, seed=14
        )
    )
    return m3_overrides(
        folder,
        data,
        stage="unified_self_distill",
        batch_size=batch,
        group_size=group,
        query_max_len=QUERY_LEN,
        passage_max_len=length,
        steps=steps,
        sub_batch_mode="gradcache",
        sub_batch_size="auto",
        gradient_checkpointing=True,
    )


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
    target = ["tests/unit/scores/test_scores_gpu.py"] if dry_run else ["tests"]
    rc, tail = _cli(["-m", "pytest", "-q", "-m", "gpu", *target], Path(out_dir) / "gpu_tests.log")
    summary = next(
        (line for line in reversed(tail.splitlines()) if " in " in line and "=" not in line[:1]), tail[-200:]
    )
    return {"ok": rc == 0, "reason": "" if rc == 0 else f"pytest exit {rc}", "summary": summary, "tail": tail}


def part_train(dry_run: bool, out_dir: str) -> dict:
    """``python -m m3lit.train experiment=demo`` on CUDA: the demo end to end; evaluation results and the export must exist."""
    run_dir = Path(out_dir) / "train"
    extra = ["evaluate.enabled=false"] if dry_run else []
    rc, tail = _cli(
        _train_args(run_dir, dry_run, "gpu", "experiment=demo", *extra), Path(out_dir) / "train.log"
    )
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
    common = ["evaluate.enabled=false", "experiment=demo", *extra]
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

    from benchmarks.api_calls import api_inputs, compare, run_api
    from benchmarks.device import bench_device
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
    import copy

    import numpy as np
    import torch

    from benchmarks.workload import read_texts, write_texts
    from m3lit import M3Embedder
    from m3lit.inference.encoding import encode_texts

    texts = read_texts(write_texts(f"gpucheck-{n}x{length}", [length - 2] * n, seed=21))
    embedder = M3Embedder(folder, use_fp16=True, devices="cuda")
    small = embedder.encode(texts, batch_size=32, max_length=length)["dense_vecs"]
    fp16 = copy.deepcopy(embedder.model).to(device="cuda", dtype=torch.float16).eval()  # as encode runs it
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(max(0, free - (3 << 30)), dtype=torch.uint8, device="cuda")
    try:
        result = encode_texts(fp16, texts, batch_size=n, max_length=length)
    finally:
        del hog, fp16
        torch.cuda.empty_cache()
    return {
        "texts": n, "requested_batch_size": n, "final_batch_size": result.batch_size,
        "max_abs_diff_vs_batch_32": float(np.abs(result.dense - small).max()),
    }  # fmt: skip
