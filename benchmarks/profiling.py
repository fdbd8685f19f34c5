"""torch.profiler helpers shared by the benchmarks: where the time of a measured region goes.

:func:`profiled` wraps a region; :func:`categorize` splits its self CPU time into matmuls, attention,
norms/activations, the optimizer and other operators, sums the matmuls' FLOPs (so their own FLOP rate can
be compared with the GEMM peak) and lists the top operators by self time with their input shapes.
"""

from __future__ import annotations

import contextlib

__all__ = ["CATEGORIES", "categorize", "profiled", "shares"]

#: Operator-name fragments of each profile category (the first match wins; optimizer ops are separate).
CATEGORIES = (
    ("attention", ("scaled_dot_product", "_efficient_attention", "_flash_attention")),
    (
        "matmul",
        (
            "aten::mm",
            "aten::addmm",
            "aten::bmm",
            "aten::matmul",
            "aten::linear",
            "aten::baddbmm",
            "mkldnn::_linear_pointwise",
        ),
    ),  # the last: m3lit.model.onednn_linear
    ("norm/activation", ("layer_norm", "gelu", "softmax", "dropout", "native_dropout")),
    ("embedding", ("embedding",)),
)


@contextlib.contextmanager
def profiled(enabled: bool = True):
    """Yield a ``torch.profiler.profile`` recording the block (shapes and FLOPs), or None when disabled."""
    if not enabled:
        yield None
        return
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, record_shapes=True, with_flops=True) as prof:
        yield prof


def _linear_flops(event) -> float:
    """2 x rows x K x N of a oneDNN linear product (the profiler counts no FLOPs for it), from its recorded
    (..., K) input and (N, K) weight shapes; 0 for anything else."""
    shapes = getattr(event, "input_shapes", None) or []
    if "_linear_pointwise" not in event.name or len(shapes) < 2 or len(shapes[0]) < 2 or len(shapes[1]) != 2:
        return 0.0
    rows = 1
    for size in shapes[0][:-1]:
        rows *= size
    return 2.0 * rows * shapes[0][-1] * shapes[1][0]


def categorize(prof) -> dict:
    """Self CPU time per category (optimizer ops on their own), matmul FLOPs, and the top operators."""
    events = prof.events()
    seconds: dict[str, float] = {}
    matmul_flops = 0.0
    for event in events:
        if event.device_type.name != "CPU":
            continue
        name, self_s = event.name, event.self_cpu_time_total / 1e6
        parent, in_optimizer = event.cpu_parent, False
        while parent is not None:
            if parent.name.startswith("Optimizer."):
                in_optimizer = True
                break
            parent = parent.cpu_parent
        if name.startswith("Optimizer.") or in_optimizer:
            category = "optimizer"
        else:
            category = next((c for c, keys in CATEGORIES if any(k in name for k in keys)), "other ops")
            if not name.startswith("aten::") and category == "other ops":
                category = "python/framework"
        seconds[category] = seconds.get(category, 0.0) + self_s
        if category == "matmul":
            matmul_flops += (getattr(event, "flops", 0) or 0) or _linear_flops(event)
    top = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)[:12]
    return {
        "category_s": dict(sorted(seconds.items(), key=lambda kv: -kv[1])),
        "matmul_flops": matmul_flops,
        "top_ops": [
            {
                "name": e.key,
                "shapes": str(e.input_shapes)[:120],
                "calls": e.count,
                "self_s": e.self_cpu_time_total / 1e6,
            }
            for e in top
        ],
    }


def shares(profile: dict) -> str:
    """ "matmul 52%, other ops 25%, ..." of a :func:`categorize` result, plus the matmuls' GFLOP/s."""
    total = sum(profile["category_s"].values()) or 1e-9
    parts = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in profile["category_s"].items())
    rate = profile["matmul_flops"] / max(profile["category_s"].get("matmul", 0.0), 1e-9) / 1e9
    return f"{parts}; matmuls alone run at {rate:.0f} GFLOP/s"
