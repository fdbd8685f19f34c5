"""Dropout for CPU training with masks drawn from raw random bits instead of ``bernoulli_``.

The encoder keeps its dropout while fine-tuning (XLM-R: p = 0.1 on the attention probabilities and on three
hidden states per layer, as in FlagEmbedding's training, which leaves the Hugging Face model in train
mode). On CPU, PyTorch draws each mask element with ``bernoulli_``, one of its slowest element-wise ops,
and the attention-probability masks are (B, heads, L, L): at the MFU benchmark's mid-size step (32 x 256
passage tokens, 6 layers x 6 heads) these draws alone were 21% of the step's time
(``python -m benchmarks.mfu`` profile). This module draws the same kind of mask from raw random bits instead:

* :func:`keep_mask`: one 32-bit word from the default CPU generator (``torch.Tensor.random_``) gives two
  16-bit lanes; the low 15 bits of each lane are a uniform integer u in [0, 2^15), and an element is kept
  when u >= round(p * 2^15). The drop probability is therefore p rounded to a multiple of 2^-15
  (0.1 -> 0.1000061); kept values are scaled by 1 / (1 - that probability), so E[output] = input exactly.
* :class:`FastDropout`: a drop-in ``nn.Dropout`` (same ``p``, no parameters, identical state dict). On CPU
  in training mode it uses :func:`keep_mask` and saves the boolean mask (1 byte per element) for backward;
  anywhere else (CUDA, eval, p = 0) it calls ``F.dropout``.
* :func:`attention`: the Hugging Face attention function registered as ``"m3lit_sdpa"``. With dropout on a
  CPU tensor it computes softmax(Q K^T * scale + mask) V with a :func:`keep_mask` on the probabilities and the
  1/(1-p) factor applied to the (B, heads, L, head_dim) output instead of the (B, heads, L, L) probabilities;
  otherwise it is transformers' own SDPA attention, unchanged.

Masks come from the default CPU generator, so they follow ``torch.manual_seed`` (m3lit seeds every step)
and are replayed by gradient checkpointing and the gradient cache like any other dropout. They differ
from PyTorch's own masks draw for draw, so a run with this dropout is not bit-identical to one without;
``model.net.fast_cpu_dropout: false`` keeps PyTorch's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

__all__ = [
    "ATTENTION_NAME",
    "FastDropout",
    "attention",
    "drop_probability",
    "keep_mask",
    "use_fast_cpu_dropout",
]

#: Name of :func:`attention` in transformers' attention registry (``config._attn_implementation``).
ATTENTION_NAME = "m3lit_sdpa"
_LANE_BITS = 15  # uniform bits used per element: the low 15 of each 16-bit lane (the high lane's 16th is 0)


def _threshold(p: float) -> int:
    return round(p * 2**_LANE_BITS)


def drop_probability(p: float) -> float:
    """The drop probability :func:`keep_mask` realises for a requested ``p``: p rounded to k / 2^15."""
    return _threshold(p) / 2**_LANE_BITS


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """Boolean CPU tensor of ``shape``, each element True (kept) with probability 1 - drop_probability(p)."""
    n = math.prod(shape)
    words = torch.empty((n + 1) // 2, dtype=torch.int32).random_()  # uniform in [0, 2^31)
    lanes = words.view(torch.int16)[:n].bitwise_and_(2**_LANE_BITS - 1)
    return lanes.ge(_threshold(p)).view(shape)


class _KeepScale(torch.autograd.Function):
    """y = x * keep * scale; backward: dy * keep * scale (``keep`` saved as bool)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        out = torch.where(keep, x, 0.0)
        return out.mul_(scale) if scale != 1.0 else out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        grad = torch.where(keep, grad, 0.0)
        return (grad.mul_(ctx.scale) if ctx.scale != 1.0 else grad), None, None


def _dropout(x: torch.Tensor, p: float, scale: bool = True) -> torch.Tensor:
    """x with a :func:`keep_mask` applied; multiplied by 1/(1 - p') unless ``scale`` is False."""
    q = drop_probability(p)
    if q >= 1.0:
        return torch.zeros_like(x)
    return _KeepScale.apply(x, keep_mask(x.shape, p), 1.0 / (1.0 - q) if scale else 1.0)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU training-mode masks come from :func:`keep_mask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.p > 0 and x.device.type == "cpu" and not self.inplace:
            return _dropout(x, self.p)
        return F.dropout(x, self.p, self.training, self.inplace)


def attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Transformers attention function: (B, heads, L, d) query/key/value -> ((B, L, heads, d) output, None).

    ``attention_mask``: None, a boolean (True = attend) or additive float mask broadcastable to
    (B, heads, L, L), as transformers prepares it for SDPA. CPU with ``dropout`` > 0 takes the explicit path
    described in the module docstring; everything else is :func:`sdpa_attention_forward`.
    """
    if dropout <= 0 or query.device.type != "cpu" or is_causal or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    # (B, heads, Lq, Lk), the scale applied on the small (B, heads, Lq, d) side
    scores = torch.matmul(query * scale, key.transpose(-1, -2))
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    probs = _dropout(torch.softmax(scores, dim=-1), dropout, scale=False)  # all zero when p' = 1
    out = torch.matmul(probs, value)  # (B, heads, Lq, d)
    if drop_probability(dropout) < 1.0:
        out.mul_(1.0 / (1.0 - drop_probability(dropout)))
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION_NAME, attention)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def use_fast_cpu_dropout(encoder: PreTrainedModel) -> None:
    """Swap every ``nn.Dropout`` of ``encoder`` for :class:`FastDropout` and, when it uses PyTorch SDPA
    attention, switch it to :func:`attention`. Parameters, state dict and saved config are unchanged."""
    for parent in encoder.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
    if getattr(encoder.config, "_attn_implementation", None) == "sdpa":
        encoder.set_attn_implementation(ATTENTION_NAME)
