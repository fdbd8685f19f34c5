"""Where and in which precision a model runs: the one dtype table and the one default device of m3lit.

Every command and builder resolves a ``dtype`` option and a missing ``device`` option through here, so
``float16`` means the same thing in training, evaluation, encoding and mining, and "the GPU when there
is one" is decided in one place.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

__all__ = ["DTYPES", "default_device", "hardware_name", "resolve_dtype"]

#: Config spelling of a floating-point precision -> the torch dtype.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def resolve_dtype(name: str | None) -> torch.dtype | None:
    """``"bfloat16"`` -> ``torch.bfloat16``; ``None`` stays ``None`` (keep the checkpoint's own dtype).

    >>> resolve_dtype("float16")
    torch.float16
    """
    if name is None:
        return None
    try:
        return DTYPES[str(name)]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} or null, got {name!r}") from None


def default_device() -> str:
    """``"cuda"`` when a CUDA device is visible, else ``"cpu"``: the device of an unset ``device`` option."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def hardware_name(device_type: str) -> str:
    """What a run ran on, for the model card: the CUDA device's name, or the CPU's model and core count."""
    if device_type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(errors="replace").splitlines() if cpuinfo.is_file() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU {model or platform.processor() or platform.machine()} ({cores} cores)"
