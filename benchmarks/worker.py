"""Child-process entry point of the m3lit side: ``python -m benchmarks.worker '{"fn": "mod:func", "kwargs": {}}'``.

Seeds everything, calls the function, adds the process's peak RSS (``ru_maxrss``) and, on CUDA, the peak
allocated GPU memory, and prints one ``BENCH_RESULT {json}`` line for :mod:`benchmarks.harness`.
``'{"tasks": [{"fn": ..., "kwargs": ...}, ...]}'`` runs several functions one after another in this one
process (each seeded afresh) and returns ``{"tasks": [result, ...]}``: throughput measurements that do not
need a fresh process share its start-up (:func:`benchmarks.harness.m3_tasks_command`).
"""

from __future__ import annotations

import importlib
import json
import random
import resource
import sys

from benchmarks.harness import RESULT_MARK


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _call(spec: dict) -> dict:
    """Seed python, numpy and torch with 0, then call ``spec["fn"]`` ("module:function") with its kwargs."""
    import numpy as np
    import torch

    module_name, _, fn_name = spec["fn"].partition(":")
    fn = getattr(importlib.import_module(module_name), fn_name)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return fn(**spec.get("kwargs", {}))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit('usage: python -m benchmarks.worker \'{"fn": "module:function", "kwargs": {...}}\'')
    spec = json.loads(argv[0])
    import torch

    if "tasks" in spec:  # each task's peak RSS = the process's peak so far (its own only for the first task)
        result = {"tasks": [{**_call(task), "peak_rss_mb": peak_rss_mb()} for task in spec["tasks"]]}
    else:
        result = _call(spec)
    result["peak_rss_mb"] = peak_rss_mb()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(RESULT_MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
