"""Device selection and hardware peaks for the benchmarks.

CUDA when present (bf16 autocast, PyTorch SDPA attention), CPU otherwise (fp32). Override with
``M3LIT_BENCH_DEVICE=cpu|cuda``. The matmul peak is *measured* (a large torch GEMM), so MFU says how close
a training step gets to what this machine's BLAS actually delivers; on CUDA the card's data-sheet peak
is reported beside it.
"""

from __future__ import annotations

import contextlib
import os
import time

import torch

__all__ = [
    "bench_device",
    "amp_dtype",
    "autocast",
    "fastest_seconds",
    "gemm_products",
    "measure_matmul_peak",
    "spec_peak_flops",
    "sync",
    "describe",
]

#: Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, FLOP/s.
GPU_SPEC_PEAK_BF16 = {
    "H200": 989.4e12,
    "H100 PCIe": 756.0e12,
    "H100": 989.4e12,  # SXM
    "A100": 312.0e12,
    "L40S": 362.1e12,
    "L4": 121.0e12,
    "A10G": 70.0e12,
    "A10": 125.0e12,
    "RTX 4090": 165.2e12,
}


def bench_device() -> torch.device:
    """M3LIT_BENCH_DEVICE when set, else m3lit's own default (:func:`m3lit.model.device.default_device`)."""
    from m3lit.model.device import default_device

    return torch.device(os.environ.get("M3LIT_BENCH_DEVICE") or default_device())


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA; None (fp32) on CPU."""
    return torch.bfloat16 if device.type == "cuda" else None


def autocast(device: torch.device):
    """The autocast context the benchmarks run models under (no-op on CPU)."""
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def sync(device: torch.device) -> None:
    """Wait for queued device work (timings on CUDA are otherwise launch times)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_products(a: torch.Tensor, b: torch.Tensor) -> list:
    """The ways torch computes ``a @ b`` on this device: its BLAS, and on CPU in fp32 also oneDNN, which m3lit's
    linear layers use (:mod:`m3lit.model.onednn_linear`; twice the BLAS rate on some CPUs)."""
    products = [lambda: a @ b]
    if a.device.type == "cpu" and a.dtype == torch.float32 and torch.backends.mkldnn.is_available():
        from m3lit.model.onednn_linear import onednn_product

        b_t = b.t().contiguous()
        products.append(lambda: onednn_product(a, b_t))
    return products


def fastest_seconds(products: list, device: torch.device, seconds: float) -> float:
    """The fastest repetition of any of ``products`` (run about ``seconds`` each, after two warm-ups)."""
    best = float("inf")
    for product in products:
        for _ in range(2):
            product()
        sync(device)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            product()
            sync(device)
            best = min(best, time.perf_counter() - start)
    return best


def measure_matmul_peak(
    device: torch.device, dtype: torch.dtype | None = None, n: int | None = None, seconds: float = 1.5
) -> float:
    """Best observed FLOP/s of an (n x n) @ (n x n) GEMM in ``dtype`` (fp32 on CPU, bf16 on CUDA), over the
    backends of :func:`gemm_products`, keeping the fastest repetition (the least disturbed by other load)."""
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    n = n or (8192 if device.type == "cuda" else 2048)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    return 2.0 * n**3 / fastest_seconds(gemm_products(a, b), device, seconds)


def spec_peak_flops(device: torch.device) -> float | None:
    """The data-sheet dense bf16 peak of the CUDA card, when known; None on CPU or unknown cards."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in GPU_SPEC_PEAK_BF16.items():
        if key in name:
            return peak
    return None


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (bf16 autocast, SDPA)"
    return f"CPU x{torch.get_num_threads()} threads (fp32)"
