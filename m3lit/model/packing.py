"""Padding-free encoder passes: only real tokens go through the encoder's linear layers.

A training batch is right-padded to its longest text. On the compact Bible benchmark half of a step's token
rows are padding (verses of 10-90 tokens padded to the batch's longest), and every Linear, LayerNorm, GELU
and dropout of every layer computes them for nothing: on CPU those GEMMs are three quarters of a step.

Here the batch is packed instead: the (B, L) ids become one (1, N) row of the N real tokens, with each
token's own position id (the one the padded pass would give it) and no attention mask. Every
per-token operation then runs on N rows. Attention alone needs the sequences apart: m3lit's attention
function (:func:`m3lit.model.cpu_dropout.attention`) receives the :class:`PackedLayout` as a keyword,
scatters the (1, heads, N, d) query, key and value back into (B, heads, L, d) with a key-padding mask, runs
the same kernel as the padded pass (with the same per-chunk dropout masks) and gathers the N rows back.
The hidden states are scattered into (B, L, H) at the end, zeros at padding, so the heads and losses see the
padded layout they always did.

Real tokens' values equal the padded pass's up to float rounding (a GEMM over N rows instead of B x L may
block its sums differently). The hidden-state dropout masks are drawn for N rows instead of B x L, so a
training run draws different masks than a padded one, from the same seed, with the same statistics.

Used when :func:`can_pack` says so: an encoder whose attention is m3lit's (``model.net.fast_cpu_dropout``)
and whose embeddings take explicit ``position_ids`` and ``token_type_ids`` (BERT- and RoBERTa-style,
including XLM-R), a (B, L) mask with padding, and no tracing or export. Switch it off with
``model.net.padding_free: false``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from m3lit.model.positions import PADDED_POSITION_TYPES, position_offset

__all__ = ["LAYOUT_KEY", "PACKABLE_TYPES", "PackedLayout", "can_pack", "packed_hidden", "takes_layout"]

#: Keyword under which the layout reaches the attention function through transformers' ``**kwargs``.
LAYOUT_KEY = "m3lit_packed_layout"
#: Encoder types whose embeddings, layers and attention calls the packed pass is tested on.
PACKABLE_TYPES = frozenset({"bert"}) | PADDED_POSITION_TYPES


@dataclass(frozen=True)
class PackedLayout:
    """Where the N real tokens of a (B, L) padded batch sit.

    Attributes:
        batch: B.
        length: L.
        index: (N,) long, flat positions ``b * L + i`` of the real tokens in row-major order.
        key_mask: (B, 1, 1, L) bool, True at real tokens: the padded pass's SDPA key mask.
    """

    batch: int
    length: int
    index: torch.Tensor
    key_mask: torch.Tensor

    @classmethod
    def of(cls, attention_mask: torch.Tensor) -> PackedLayout:
        """The layout of a (B, L) 0/1 or bool attention mask."""
        mask = attention_mask.bool()
        return cls(
            mask.shape[0], mask.shape[1], mask.reshape(-1).nonzero().squeeze(1), mask[:, None, None, :]
        )

    @property
    def tokens(self) -> int:
        """N, the real tokens."""
        return int(self.index.numel())

    def gather(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, L, ...) -> (1, N, ...): the real tokens' rows."""
        return padded.reshape(self.batch * self.length, *padded.shape[2:])[self.index].unsqueeze(0)

    def scatter(self, packed: torch.Tensor) -> torch.Tensor:
        """(1, N, ...) -> (B, L, ...): the rows back in place, zeros at padding (differentiable)."""
        rows = packed.squeeze(0)
        out = rows.new_zeros(self.batch * self.length, *rows.shape[1:])
        return out.index_copy(0, self.index, rows).reshape(self.batch, self.length, *rows.shape[1:])

    def heads_to_padded(self, packed: torch.Tensor) -> torch.Tensor:
        """Attention input (1, heads, N, d) -> (B, heads, L, d), zeros at padding."""
        return self.scatter(packed.transpose(1, 2)).transpose(1, 2)

    def heads_to_packed(self, padded: torch.Tensor) -> torch.Tensor:
        """Attention output (B, L, heads, d) -> (1, N, heads, d)."""
        return self.gather(padded)


def takes_layout(attention_function):
    """Mark a transformers attention function as one that reads :data:`LAYOUT_KEY` (decorator)."""
    attention_function.takes_packed_layout = True
    return attention_function


def can_pack(encoder: nn.Module, attention_mask: torch.Tensor | None) -> bool:
    """Whether :func:`packed_hidden` applies: an attention function marked by :func:`takes_layout` (m3lit's),
    a tested encoder type, a (B, L) mask with at least one padding token, and no tracing, scripting, export
    or compiling."""
    config = encoder.config
    attention = ALL_ATTENTION_FUNCTIONS.get(getattr(config, "_attn_implementation", None) or "")
    return (
        attention_mask is not None
        and attention_mask.dim() == 2
        and getattr(attention, "takes_packed_layout", False)
        and getattr(config, "model_type", None) in PACKABLE_TYPES
        and not getattr(config, "is_decoder", False)
        and not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export())
        and not torch.compiler.is_compiling()  # torch.export / dynamo capture a data-independent graph
        and not bool(attention_mask.all())
    )


def padded_position_ids(encoder: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) position ids that ``encoder``'s embeddings give a padded batch by default: 0..L-1 (BERT), or
    pad_token_id + 1 + the count of real tokens so far (RoBERTa-style, computed from ``input_ids``)."""
    offset = position_offset(encoder.config)
    if offset:  # transformers' create_position_ids_from_input_ids
        real = input_ids.ne(offset - 1).long()
        return torch.cumsum(real, dim=1) * real + (offset - 1)
    return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)


def packed_hidden(encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) ids and 0/1 mask -> (B, L, H) last hidden states from one padding-free pass (module docstring);
    zeros at padding."""
    layout = PackedLayout.of(attention_mask)
    positions = padded_position_ids(encoder, input_ids)
    packed_ids = layout.gather(input_ids)
    hidden = encoder(
        input_ids=packed_ids,
        position_ids=layout.gather(positions),
        token_type_ids=torch.zeros_like(packed_ids),
        attention_mask=None,
        return_dict=True,
        **{LAYOUT_KEY: layout},
    ).last_hidden_state
    return layout.scatter(hidden)
