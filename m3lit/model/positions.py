"""Extend an encoder's learnt absolute position embeddings, e.g. XLM-R 514 -> 8194 rows (512 -> 8192 tokens).

BGE-M3 starts from XLM-RoBERTa-large with its positions extended to 8192 before RetroMAE pre-training
(arXiv:2402.03216 App. B.1); how the new rows were initialised is not published (spec §4.6). m3lit offers:

* ``"copy"`` (default): the learnt token positions are repeated cyclically, new row p = old row
  offset + (p - offset) mod L_old, as Longformer did for RoBERTa (Beltagy et al. 2020, arXiv:2004.05150 §5).
  Each new block starts with the same local structure the model knows, so attention patterns that depend
  on relative distance keep working inside a block, and continued pre-training only has to learn to tell
  the blocks apart. This is the usual choice and what we recommend.
  The rows of the original table are kept bit-identical, so inputs up to L_old tokens encode exactly as
  before.
* ``"interpolate"``: linear interpolation of the learnt rows onto the longer range (new position p takes
  the value at fractional old position p * (L_old - 1) / (L_new - 1)), as position interpolation does for
  rotary models. Keeps the two ends and the smooth shape, but moves every position, so even short inputs
  encode differently until the model is trained further.

The padding-offset rows are always kept: RoBERTa-style models number positions from ``pad_token_id + 1``,
so XLM-R's rows 0 and 1 hold no token position and its 514 rows hold 512 tokens.

>>> from transformers import AutoModel
>>> from m3lit.model.tiny import tiny_xlmr_config
>>> encoder = AutoModel.from_config(tiny_xlmr_config(100, max_length=16))
>>> extend_position_embeddings(encoder, 40).config.max_position_embeddings   # 40 tokens + offset 2
42
"""

from __future__ import annotations

import logging

import torch
from torch import nn

__all__ = ["extend_position_embeddings", "position_offset"]

log = logging.getLogger(__name__)

#: Model types whose position ids start at pad_token_id + 1 (RoBERTa-style).
PADDED_POSITION_TYPES = frozenset({"xlm-roberta", "roberta", "camembert", "xlm-roberta-xl", "data2vec-text"})


def position_offset(config) -> int:
    """Rows of the position table that hold no token position: pad_token_id + 1 for RoBERTa-style models."""
    if getattr(config, "model_type", None) in PADDED_POSITION_TYPES:
        return int(config.pad_token_id or 0) + 1
    return 0


def extend_position_embeddings(model: nn.Module, new_max_length: int, *, init: str = "copy", tokenizer=None):
    """Grow the absolute position table of ``model`` so it accepts ``new_max_length`` tokens; in place.

    Args:
        model: a Hugging Face encoder with ``embeddings.position_embeddings`` (BERT, RoBERTa, XLM-R, ...) or an
            :class:`~m3lit.model.M3Model` (its ``.encoder`` is extended and its tokenizer updated).
        new_max_length: tokens per input after extension (8192 for BGE-M3); the table gets that many rows plus
            the padding offset.
        init: ``"copy"`` (cyclic copies of the learnt rows) or ``"interpolate"``; see the module docstring.
        tokenizer: its ``model_max_length`` is set to ``new_max_length`` (an M3Model's own tokenizer is
            updated when this is None).

    Returns:
        ``model``, with ``config.max_position_embeddings``, the position table and the ``position_ids`` /
        ``token_type_ids`` buffers resized.

    Raises:
        ValueError: unknown ``init``, a shorter ``new_max_length``, or a model without absolute position
            embeddings (relative/rotary position types have nothing to extend).
    """
    if init not in ("copy", "interpolate"):
        raise ValueError(f"init must be 'copy' or 'interpolate', got {init!r}")
    encoder, tokenizer = _encoder_and_tokenizer(model, tokenizer)
    config = encoder.config
    embeddings = getattr(encoder, "embeddings", None)
    old_table = getattr(embeddings, "position_embeddings", None)
    if not isinstance(old_table, nn.Embedding):
        raise ValueError(
            f"{type(encoder).__name__} has no learnt absolute position table (embeddings.position_embeddings)"
        )
    position_type = getattr(config, "position_embedding_type", "absolute")
    if position_type not in (None, "absolute"):
        raise ValueError(
            f"position_embedding_type is {position_type!r}; only absolute positions can be extended"
        )
    offset = position_offset(config)
    old_rows = old_table.num_embeddings
    new_rows = new_max_length + offset
    if new_rows < old_rows:
        raise ValueError(
            f"new_max_length={new_max_length} is shorter than the current {old_rows - offset} tokens"
        )

    old = old_table.weight.detach()
    learnt = old[offset:]  # (L_old, H) rows of real token positions
    if init == "copy":
        index = torch.arange(new_rows - offset, device=old.device) % learnt.shape[0]
        grown = learnt[index]  # rows 0..L_old-1 are the original rows, bit-identical
    else:
        grown = _interpolate_rows(learnt, new_rows - offset)
    table = nn.Embedding(
        new_rows, old.shape[1], padding_idx=old_table.padding_idx, device=old.device, dtype=old.dtype
    )
    with torch.no_grad():
        table.weight.copy_(torch.cat([old[:offset], grown]))
    table.weight.requires_grad_(old_table.weight.requires_grad)
    embeddings.position_embeddings = table

    for name in ("position_ids", "token_type_ids"):
        buffer = getattr(embeddings, name, None)
        if isinstance(buffer, torch.Tensor):
            fresh = torch.arange(new_rows, device=buffer.device) if name == "position_ids" else None
            fresh = (
                torch.zeros(new_rows, dtype=buffer.dtype, device=buffer.device) if fresh is None else fresh
            )
            persistent = name not in getattr(embeddings, "_non_persistent_buffers_set", set())
            embeddings.register_buffer(name, fresh.to(buffer.dtype).expand(1, -1), persistent=persistent)
    config.max_position_embeddings = new_rows
    if tokenizer is not None:
        tokenizer.model_max_length = new_max_length
    log.info("extended position embeddings %d -> %d rows (%s init)", old_rows, new_rows, init)
    return model


def _encoder_and_tokenizer(model: nn.Module, tokenizer):
    """The Hugging Face encoder that holds the position table, and the tokenizer to update.

    ``model`` is that encoder itself (it has ``embeddings``) or a wrapper holding it as ``.encoder`` and its
    tokenizer as ``.tokenizer`` (an :class:`~m3lit.model.M3Model`). Duck-typed, so this module does not
    import :mod:`m3lit.model.m3`, which imports it.
    """
    if hasattr(model, "embeddings") or not hasattr(model, "encoder"):
        return model, tokenizer
    return model.encoder, tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)


def _interpolate_rows(rows: torch.Tensor, length: int) -> torch.Tensor:
    """(L_old, H) -> (length, H) by linear interpolation along the position axis (ends kept)."""
    grid = torch.nn.functional.interpolate(
        rows.float().t().unsqueeze(0), size=length, mode="linear", align_corners=True
    )  # (1, H, length)
    return grid[0].t().to(rows.dtype).contiguous()
