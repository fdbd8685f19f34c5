"""Dropout for CPU training with masks drawn from raw random bits instead of ``bernoulli_``.

The encoder keeps its dropout while fine-tuning (XLM-R: p = 0.1 on the attention probabilities and on three
hidden states per layer, as in FlagEmbedding's training, which leaves the Hugging Face model in train
mode). On CPU, PyTorch draws each mask element with ``bernoulli_``, one of its slowest element-wise ops,
and the attention-probability masks are (B, heads, L, L): at the MFU benchmark's mid-size step (32 x 256
passage tokens, 6 layers x 6 heads) these draws alone were 21% of the step's time
(``python -m benchmarks.mfu`` profile). This module draws the same kind of mask from raw random bits instead:

* :func:`m3lit.model.dropout_mask.keep_mask`: the masks, two 15-bit uniforms per random 32-bit word, p
  rounded to a multiple of 2^-15; kept values are scaled by 1 / (1 - that probability).
* :class:`FastDropout`: a drop-in ``nn.Dropout`` (same ``p``, no parameters, identical state dict). On CPU
  in training mode it uses :func:`keep_mask` and saves the boolean mask (1 byte per element) for backward;
  anywhere else (CUDA, eval, p = 0) it calls ``F.dropout``.
* :func:`attention`: the Hugging Face attention function registered as ``"m3lit_sdpa"``. With dropout on a
  CPU tensor it is :func:`m3lit.model.chunked_attention.dropout_attention`: softmax(Q K^T * scale + mask) V
  with a keep mask on the probabilities, computed chunk by chunk so memory stays O(L) per query row block
  instead of O(L^2); otherwise it is transformers' own SDPA attention, unchanged.

Masks come from the default CPU generator, so they follow ``torch.manual_seed`` (m3lit seeds every step)
and are replayed by gradient checkpointing and the gradient cache like any other dropout. They differ
from PyTorch's own masks draw for draw, so a run with this dropout is not bit-identical to one without;
``model.net.fast_cpu_dropout: false`` keeps PyTorch's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from m3lit.model.chunked_attention import dropout_attention
from m3lit.model.dropout_mask import drop_probability, keep_mask
from m3lit.model.packing import LAYOUT_KEY, takes_layout

__all__ = [
    "ATTENTION_NAME",
    "FastDropout",
    "attention",
    "use_fast_cpu_dropout",
]

#: Name of :func:`attention` in transformers' attention registry (``config._attn_implementation``).
ATTENTION_NAME = "m3lit_sdpa"


class _KeepScale(torch.autograd.Function):
    """y = x * keep * scale; backward: dy * keep * scale (``keep`` saved as bool).

    The product takes the bool mask's bytes as uint8 0/1 (a free view): on CPU several times faster than
    ``torch.where``. An infinite x at a dropped element gives NaN here, as ``nn.Dropout`` does.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        out = x * keep.view(torch.uint8)
        return out.mul_(scale) if scale != 1.0 else out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        grad = grad * keep.view(torch.uint8)
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


@takes_layout
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
    (B, heads, L, L), as transformers prepares it for SDPA. CPU with ``dropout`` > 0 takes the chunked path
    described in the module docstring; everything else is :func:`sdpa_attention_forward`.

    A padding-free pass (:mod:`m3lit.model.packing`) passes its layout as ``m3lit_packed_layout``: then
    query/key/value are (1, heads, N, d) over the N real tokens; they are scattered into the padded
    (B, heads, L, d) layout with its key mask, attended as above, and the output is (1, N, heads, d).
    """
    layout = kwargs.pop(LAYOUT_KEY, None)
    if layout is not None:
        out, _ = attention(
            module,
            layout.heads_to_padded(query),
            layout.heads_to_padded(key),
            layout.heads_to_padded(value),
            layout.key_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
        return layout.heads_to_packed(out), None
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
    if drop_probability(dropout) >= 1.0:  # everything dropped: zeros, zero gradients
        zeros = query.new_zeros(*query.shape[:-1], key.shape[-2])
        return torch.matmul(zeros, value).transpose(1, 2).contiguous(), None
    if attention_mask is not None and attention_mask.requires_grad:
        raise ValueError("m3lit's CPU dropout attention takes no gradient for the attention mask")
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    return dropout_attention(query, key, value, attention_mask, scale, dropout), None


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
