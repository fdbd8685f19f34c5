"""Child-process side of :mod:`benchmarks.harness`: run one measurement, print one ``BENCH_RESULT {json}`` line.

    python -m benchmarks.worker '{"fn": "module:function", "kwargs": {...}}'
    python -m benchmarks.worker '{"tasks": [{"fn": ..., "kwargs": ...}, ...]}'

Seeds everything, calls the function, adds the process's peak RSS (``ru_maxrss``) and, on CUDA, the peak
allocated GPU memory. ``{"tasks": [...]}`` runs several functions one after another in this one process
(each seeded afresh) and returns ``{"tasks": [result, ...]}``: throughput measurements that do not need a
fresh process share its start-up (:func:`benchmarks.harness.m3_tasks_command`).

:func:`serve` is the protocol itself; FlagEmbedding's side (``benchmarks/flag_worker.py``, in its own
environment) serves its tasks through it too, so this module imports only the standard library at the top.
"""

from __future__ import annotations

import importlib
import json
import random
import resource
import sys
from collections.abc import Callable

__all__ = ["RESULT_MARK", "peak_rss_mb", "serve", "main"]

RESULT_MARK = "BENCH_RESULT "


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve(argv: list[str], resolve: Callable[[dict], Callable[..., dict]], usage: str) -> None:
    """Parse the one JSON argument, run its task(s) seeded with 0 (python, numpy, torch), print the result.

    ``resolve`` maps one task spec (a dict) to the function to call with its ``kwargs``."""
    if len(argv) != 1:
        raise SystemExit(f"usage: {usage}")
    spec = json.loads(argv[0])
    import numpy as np
    import torch

    def call(task: dict) -> dict:
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
        return resolve(task)(**task.get("kwargs", {}))

    if "tasks" in spec:  # each task's peak RSS = the process's peak so far (its own only for the first task)
        result = {"tasks": [{**call(task), "peak_rss_mb": peak_rss_mb()} for task in spec["tasks"]]}
    else:
        result = call(spec)
    result["peak_rss_mb"] = peak_rss_mb()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(RESULT_MARK + json.dumps(result), flush=True)


def _function(task: dict) -> Callable[..., dict]:
    """``task["fn"]`` ("module:function"), imported."""
    module_name, _, fn_name = task["fn"].partition(":")
    return getattr(importlib.import_module(module_name), fn_name)


def main(argv: list[str] | None = None) -> None:
    usage = 'python -m benchmarks.worker \'{"fn": "module:function", "kwargs": {...}}\''
    serve(sys.argv[1:] if argv is None else argv, _function, usage)


if __name__ == "__main__":
    main()
