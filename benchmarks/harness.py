"""Measurement harness: one subprocess per measurement, alternating sides, min/median/max, JSON, tables.

Why subprocesses: peak RSS (``ru_maxrss``) is a per-process high-water mark, so every measurement gets
a fresh interpreter; and FlagEmbedding lives in another virtual environment (``.venv-flag``, it needs an
older transformers), so its side is a subprocess anyway. Both sides print one ``BENCH_RESULT {json}``
line; the parent also samples the child's RSS and kills it (status ``killed: memory``) before the machine
runs out of memory, or when it exceeds its time limit (status ``timeout``).

Why alternating runs: the benchmark machine is shared, so absolute timings drift; ratios are taken between
runs made side by side (A B, B A, A B, ...) and reported as min/median/max over the pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from benchmarks.worker import RESULT_MARK

__all__ = [
    "REPO",
    "bench_parser",
    "want_flag",
    "RESULT_MARK",
    "RunResult",
    "alternate",
    "environment",
    "flag_available",
    "flag_command",
    "format_table",
    "fmt_range",
    "m3_command",
    "pair_ratios",
    "peak_memory",
    "results_dir",
    "run_subprocess",
    "save_json",
    "summarize",
]

REPO = Path(__file__).resolve().parents[1]
#: Interpreter of the separate FlagEmbedding environment (override with M3LIT_FLAG_PYTHON).
FLAG_PYTHON = Path(os.environ.get("M3LIT_FLAG_PYTHON", str(REPO / ".venv-flag" / "bin" / "python")))
#: A child is killed when the machine's available memory falls below this many MB (override: env var).
MIN_AVAILABLE_MB = float(os.environ.get("M3LIT_BENCH_MIN_AVAILABLE_MB", "1536"))

_CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "WANDB_DISABLED": "true",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONHASHSEED": "0",
    "PYTHONUNBUFFERED": "1",
}


def results_dir() -> Path:
    """Where JSON results go: ``bench_results/`` in the repo, or ``$M3LIT_BENCH_RESULTS``."""
    return Path(os.environ.get("M3LIT_BENCH_RESULTS", str(REPO / "bench_results")))


def flag_available() -> bool:
    """True when the FlagEmbedding interpreter exists (``.venv-flag/bin/python`` or M3LIT_FLAG_PYTHON)."""
    return FLAG_PYTHON.is_file() and os.access(FLAG_PYTHON, os.X_OK)


def bench_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark module shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="reduced sizes and one run per side (smoke test)"
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per side (default 3, --quick 1)")
    parser.add_argument(
        "--no-flag", action="store_true", help="skip the FlagEmbedding side even if installed"
    )
    return parser


def want_flag(args: argparse.Namespace) -> bool:
    """Run the FlagEmbedding side: installed, not disabled, and on CPU (its environment is CPU-only here)."""
    from benchmarks.device import bench_device

    return flag_available() and not args.no_flag and bench_device().type == "cpu"


def m3_command(fn: str, **kwargs) -> list[str]:
    """argv that runs ``fn`` ("module:function") with ``kwargs`` in a fresh m3lit interpreter."""
    return [sys.executable, "-m", "benchmarks.worker", json.dumps({"fn": fn, "kwargs": kwargs})]


def flag_command(task: str, **kwargs) -> list[str]:
    """argv that runs FlagEmbedding ``task`` (see ``benchmarks/flag_worker.py``) in ``.venv-flag``."""
    return [
        str(FLAG_PYTHON),
        str(REPO / "benchmarks" / "flag_worker.py"),
        json.dumps({"task": task, "kwargs": kwargs}),
    ]


def m3_tasks_command(tasks: Sequence[tuple[str, dict]]) -> list[str]:
    """argv that runs several (``fn``, kwargs) one after another in one fresh m3lit interpreter."""
    specs = [{"fn": fn, "kwargs": kwargs} for fn, kwargs in tasks]
    return [sys.executable, "-m", "benchmarks.worker", json.dumps({"tasks": specs})]


def flag_tasks_command(tasks: Sequence[tuple[str, dict]]) -> list[str]:
    """argv that runs several FlagEmbedding (``task``, kwargs) one after another in one process."""
    specs = [{"task": task, "kwargs": kwargs} for task, kwargs in tasks]
    return [str(FLAG_PYTHON), str(REPO / "benchmarks" / "flag_worker.py"), json.dumps({"tasks": specs})]


@dataclass
class RunResult:
    """One subprocess measurement.

    Attributes:
        status: "ok", "timeout", "killed: memory (...)" or "error: <last stderr line>".
        result: the child's JSON result (empty unless status is "ok").
        wall_s: wall time of the whole subprocess, start-up included.
        sampled_peak_rss_mb: highest RSS of the child's process tree seen by the parent's sampler.
        log_tail: the end of the child's stderr, for failures.
        load: the machine's 1-minute load average at the start and the end (other processes' CPU use
            distorts timings; recorded so a reader can judge).
    """

    status: str
    result: dict = field(default_factory=dict)
    wall_s: float = 0.0
    sampled_peak_rss_mb: float = 0.0
    log_tail: str = ""
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def task_results(self, n: int) -> list[RunResult]:
        """One result per task of a multi-task run (:func:`m3_tasks_command`), each with this process's
        status, wall time and load, and its ``peak_rss_mb`` = the process's peak at the end of that task
        (the task's own peak only for the first task)."""
        tasks = self.result.get("tasks", [{}] * n) if self.ok else [{}] * n
        return [
            RunResult(
                self.status, dict(task), self.wall_s, self.sampled_peak_rss_mb, self.log_tail, self.load
            )
            for task in tasks
        ]


def _tree_rss(proc: psutil.Process) -> float:
    total = 0
    try:
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += p.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0
    return total / 2**20


def run_subprocess(
    argv: Sequence[str],
    *,
    timeout_s: float,
    min_available_mb: float | None = None,
    max_rss_mb: float | None = None,
    env: dict[str, str] | None = None,
    poll_s: float = 0.05,
) -> RunResult:
    """Run ``argv`` in its own process group, watch its memory, and parse its ``BENCH_RESULT`` line.

    Args:
        argv: the command (see :func:`m3_command`, :func:`flag_command`).
        timeout_s: wall-clock limit; the process group is killed after it.
        min_available_mb: kill when the machine's available memory drops below this (default
            ``MIN_AVAILABLE_MB``), so a memory-hungry reference run never takes the machine down.
        max_rss_mb: also kill when the child's tree exceeds this RSS.
        env: extra environment variables.
    """
    floor = MIN_AVAILABLE_MB if min_available_mb is None else min_available_mb
    child_env = {**os.environ, **_CHILD_ENV, **(env or {})}
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=err, cwd=REPO, env=child_env, start_new_session=True, text=True
        )
        watched = psutil.Process(proc.pid)
        peak, status = 0.0, None
        while proc.poll() is None:
            rss = _tree_rss(watched)
            peak = max(peak, rss)
            available = psutil.virtual_memory().available / 2**20
            if time.perf_counter() - start > timeout_s:
                status = f"timeout (> {timeout_s:.0f} s)"
            elif available < floor:
                status = f"killed: memory (machine had {available:.0f} MB left, child RSS {rss:.0f} MB)"
            elif max_rss_mb is not None and rss > max_rss_mb:
                status = f"killed: memory (child RSS {rss:.0f} MB > cap {max_rss_mb:.0f} MB)"
            if status:
                _kill_group(proc)
                break
            time.sleep(poll_s)
        proc.wait()
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    log_tail = "\n".join((stderr.strip().splitlines() or [""])[-25:])
    load = (round(load_start, 2), round(os.getloadavg()[0], 2))
    if status:
        return RunResult(status, {}, wall, peak, log_tail, load)
    marked = [line for line in stdout.splitlines() if line.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not marked:
        last = (stderr.strip().splitlines() or stdout.strip().splitlines() or ["no output"])[-1]
        return RunResult(f"error: exit {proc.returncode}: {last[:300]}", {}, wall, peak, log_tail, load)
    return RunResult("ok", json.loads(marked[-1][len(RESULT_MARK) :]), wall, peak, "", load)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group this harness started for ``proc`` (and only that group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def alternate(
    sides: dict[str, Callable[[int], RunResult]], runs: dict[str, int]
) -> dict[str, list[RunResult]]:
    """Run each side ``runs[side]`` times, interleaved: round r runs the sides in order, reversed on odd r.

    A side with fewer runs simply sits out the later rounds. Returns each side's results in run order.
    """
    out: dict[str, list[RunResult]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(max(runs.values(), default=0)):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            if r < runs.get(name, 0):
                res = sides[name](r)
                out[name].append(res)
                note = "" if res.ok else f"  [{res.status}]"
                print(
                    f"    run {r + 1}/{runs[name]} {name}: {res.wall_s:.1f} s{note}",
                    file=sys.stderr,
                    flush=True,
                )
    return out


def summarize(values: Sequence[float]) -> dict:
    """min / median / max / n of ``values`` (an empty input gives n=0 and None)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"min": None, "median": None, "max": None, "n": 0}
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "n": len(vals)}


def peak_memory(results: Sequence[RunResult]) -> dict:
    """Peak memory over the ok runs: ``{"peak_mb": summary, "memory": key}``, key ``peak_gpu_mb`` when the
    runs used CUDA (the worker recorded it), else ``peak_rss_mb``."""
    ok = [r.result for r in results if r.ok]
    key = "peak_gpu_mb" if ok and "peak_gpu_mb" in ok[0] else "peak_rss_mb"
    return {"peak_mb": summarize([r[key] for r in ok]), "memory": key}


def pair_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> dict:
    """Ratios of alternated runs paired by index (run i of A / run i of B), summarised.

    With unequal counts the extra runs are paired with the other side's median.
    """
    if not numerators or not denominators:
        return summarize([])
    n = max(len(numerators), len(denominators))
    num_med, den_med = statistics.median(numerators), statistics.median(denominators)
    nums = list(numerators) + [num_med] * (n - len(numerators))
    dens = list(denominators) + [den_med] * (n - len(denominators))
    return summarize([a / b for a, b in zip(nums, dens, strict=True) if b])


def fmt_range(stats: dict, digits: int = 2, scale: float = 1.0) -> str:
    """ "median (min-max)" of a :func:`summarize` dict, or "n/a"."""
    if not stats or stats.get("n", 0) == 0 or stats.get("median") is None:
        return "n/a"
    med, lo, hi = (stats[k] * scale for k in ("median", "min", "max"))
    if stats["n"] == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-markdown table."""
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_FLAG_VERSIONS: dict | None = None


def _flag_versions() -> dict:
    global _FLAG_VERSIONS
    if _FLAG_VERSIONS is None:
        res = run_subprocess(flag_command("versions"), timeout_s=120) if flag_available() else None
        _FLAG_VERSIONS = res.result if res is not None and res.ok else {}
    return _FLAG_VERSIONS


def _git_sha() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        return sha.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(with_flag: bool = False) -> dict:
    """Machine, versions and command line recorded with every JSON result."""
    import torch
    import transformers

    info = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "m3lit_git": _git_sha(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if with_flag:
        info["flagembedding"] = _flag_versions()
    return info


def save_json(name: str, payload: dict) -> Path:
    """Write ``payload`` to ``bench_results/<name>.json`` and return the path."""
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return path


def _jsonable(obj: object) -> object:
    if isinstance(obj, RunResult):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
