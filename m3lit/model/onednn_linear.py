"""Linear layers whose CPU fp32 matrix products run through oneDNN instead of the default BLAS.

PyTorch's CPU ``nn.Linear`` calls ``addmm``, which for fp32 goes to the BLAS torch was built with (MKL in the
pip wheels). On some CPUs that BLAS is far from the machine's peak: on the AMD EPYC (AVX-512) machine of
m3lit's benchmarks, MKL's fp32 GEMM at multilingual-e5-small's three linear shapes (4096 token rows) ran at
173-181 GFLOP/s, while oneDNN (shipped inside the same torch, ``torch.ops.mkldnn._linear_pointwise``) ran the
same products at 378-404 GFLOP/s and ONNX Runtime's MLAS at 312-363 (``python -m benchmarks.gemm_backends``;
backward: dx 342-394 against 175-181, dW 216-239 against 167-185). The encoder's linear layers are most of a
step, so this is where a CPU run spends its time.

:class:`OneDnnLinear` is an ``nn.Linear`` (same parameters, state dict, hooks; peft adapts it like any Linear)
whose forward on a CPU fp32 input of 2 or more dimensions is :class:`_OneDnnLinearFunction`:

    forward   y = x W^T + b                      oneDNN, x (..., K), W (N, K)
    backward  dx = dy W                          oneDNN, as a linear layer with weight W^T (K, N)
              dW = (x^T dy)^T                    oneDNN, as a linear layer on x^T with weight dy^T
              db = sum over rows of dy

Anything else (CUDA, half precision, a 1-D input, tracing, ONNX export, ``torch.compile``) takes
``F.linear``. The values equal ``F.linear``'s up to float rounding (another summation order), and the
gradients too (``tests/unit/model/test_onednn_linear.py``). ``M3LIT_ONEDNN_LINEAR=0`` in the environment
turns it off (every Linear then calls ``F.linear``), for comparisons.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import register_flop_formula

__all__ = ["OneDnnLinear", "enabled", "onednn_product", "use_onednn_linear"]


def enabled() -> bool:
    """Whether oneDNN linear layers are on: torch has oneDNN and ``M3LIT_ONEDNN_LINEAR`` is not ``0``."""
    return torch.backends.mkldnn.is_available() and os.environ.get("M3LIT_ONEDNN_LINEAR", "1") != "0"


if torch.backends.mkldnn.is_available():  # torch's FLOP counter (FlopCounterMode) then counts these products

    @register_flop_formula(torch.ops.mkldnn._linear_pointwise)
    def _product_flops(x_shape, w_shape, *args, **kwargs) -> int:
        """2 x rows x K x N for (..., K) inputs and an (N, K) weight."""
        return 2 * math.prod(x_shape[:-1]) * x_shape[-1] * w_shape[0]


def onednn_product(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a (..., K) @ b (N, K)^T (+ bias): oneDNN's fp32 linear layer."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


class _OneDnnLinearFunction(torch.autograd.Function):
    """y = x W^T + b with oneDNN products forward and backward (module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])  # (M, N)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = onednn_product(rows, weight.t().contiguous()).view(x.shape)  # (M, N) @ (N, K)
        if ctx.needs_input_grad[1]:
            inputs = x.reshape(-1, x.shape[-1])  # (M, K)
            grad_weight = (
                onednn_product(inputs.t().contiguous(), rows.t().contiguous()).t().contiguous()
            )  # (N, K)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = rows.sum(0)
        return grad_x, grad_weight, grad_bias


def _eligible(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.dim() >= 2
        and x.shape[-1] > 0
        and not x.is_mkldnn
        and not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export())
        and not torch.compiler.is_compiling()
    )


class OneDnnLinear(nn.Linear):
    """``nn.Linear`` computed by oneDNN on CPU fp32 inputs (module docstring); ``F.linear`` elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _eligible(x, self.weight):
            return _OneDnnLinearFunction.apply(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def use_onednn_linear(module: nn.Module) -> nn.Module:
    """Turn every plain ``nn.Linear`` inside ``module`` into a :class:`OneDnnLinear`, in place (the class is
    swapped: parameters, state dict and hooks stay). A no-op when :func:`enabled` is false."""
    if enabled():
        for child in module.modules():
            if type(child) is nn.Linear:
                child.__class__ = OneDnnLinear
    return module
