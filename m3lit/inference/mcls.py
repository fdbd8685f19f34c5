"""Multiple CLS (MCLS) for long documents at inference time (BGE-M3, arXiv:2402.03216 App. B.2).

The paper inserts a CLS token every few hundred tokens of a long document and takes the mean of the last
hidden states at all CLS positions as the dense embedding, so that a model fine-tuned on shorter texts
still summarises every part of a long one (MLDR nDCG@10 41.2 -> 45.0 for the dense model trained without
long data). The paper leaves the details open (spec §4.7); m3lit fixes them as follows.

Exact choices
-------------
* **Token.** The inserted token is the tokenizer's ``cls_token_id`` (``<s>``, id 0 for XLM-R), the same
  id that starts every sequence. No new embedding is learnt.
* **Positions.** The tokenised text ``<s> t_1 .. t_n </s>`` becomes::

      <s> t_1 .. t_N  <s> t_N+1 .. t_2N  <s> ..  t_n </s>

  i.e. the content tokens are cut into chunks of ``interval`` (N, default 256) tokens and every chunk after
  the first is preceded by one extra ``<s>``; the original leading ``<s>`` heads the first chunk. No
  ``<s>`` is inserted when no content token follows it (never directly before ``</s>``). A text with at
  most N content tokens is unchanged, so MCLS equals the ordinary encoding on short texts.
* **EOS.** The single ``</s>`` stays at the end; no ``</s>`` is added between chunks.
* **Position ids and attention.** The sequence is encoded as one ordinary input: position ids simply
  continue through the inserted tokens (no reset per chunk) and attention is full (every token sees every
  other token, the inserted CLS tokens included).
* **Max length.** ``max_length`` bounds the FINAL sequence, inserted tokens included, so the encoder's
  position limit is respected: content is truncated to the largest n with
  ``2 + n + ceil(n / N) - 1 <= max_length``. A truncated text therefore keeps slightly fewer content
  tokens with MCLS than without.
* **Dense.** mean of the last hidden states at all CLS positions (the leading one and the inserted ones),
  THEN L2-normalised (``F.normalize``). The individual CLS states are not normalised before averaging.
* **Sparse.** computed from the same forward pass; the inserted tokens carry id ``cls_token_id``, a
  special id whose lexical weight is always 0, so they never appear in the sparse output.
* **ColBERT.** computed from the same forward pass; the rows at inserted CLS positions are removed, so a
  text yields one vector per content token plus ``</s>``, as without MCLS (the vectors themselves differ
  because the context contains the extra tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from m3lit.model import M3Model, M3Output
from m3lit.model.heads import mean_pool

__all__ = ["DEFAULT_INTERVAL", "insert_cls_tokens", "mcls_pool", "mcls_forward"]

#: Paper App. B.2: one CLS every 256 tokens.
DEFAULT_INTERVAL = 256


def insert_cls_tokens(
    input_ids: Sequence[int], interval: int, cls_id: int, eos_id: int, max_length: int
) -> tuple[list[int], list[bool]]:
    """Insert a CLS token before every ``interval`` content tokens of one tokenised text.

    Args:
        input_ids: ``[cls_id, t_1, .., t_n, eos_id]`` as the tokenizer returns it (special tokens added).
        interval: content tokens per chunk (N > 0).
        cls_id: id of the CLS token (inserted as is).
        eos_id: id of the final EOS token.
        max_length: bound on the returned length, inserted tokens included (>= 2).

    Returns:
        ``(ids, inserted)``: the new ids and, per position, True where a CLS token was INSERTED (the
        leading CLS is False).

    >>> insert_cls_tokens([0, 5, 6, 7, 8, 9, 2], interval=2, cls_id=0, eos_id=2, max_length=100)
    ([0, 5, 6, 0, 7, 8, 0, 9, 2], [False, False, False, True, False, False, True, False, False])
    >>> insert_cls_tokens([0, 5, 6, 7, 8, 2], interval=2, cls_id=0, eos_id=2, max_length=6)[0]
    [0, 5, 6, 0, 7, 2]
    """
    if interval <= 0:
        raise ValueError(f"MCLS interval must be positive, got {interval}")
    if max_length < 2:
        raise ValueError(f"MCLS max_length must be at least 2 (CLS + EOS), got {max_length}")
    ids = list(input_ids)
    if len(ids) < 2 or ids[0] != cls_id or ids[-1] != eos_id:
        raise ValueError(
            f"MCLS needs texts tokenised as [cls={cls_id}, ..., eos={eos_id}], got ids starting "
            f"{ids[:3]} and ending {ids[-3:]}"
        )
    content = ids[1:-1]
    n = len(content)
    while n > 0 and 2 + n + math.ceil(n / interval) - 1 > max_length:
        n -= 1
    out, inserted = [cls_id], [False]
    for start in range(0, n, interval):
        if start > 0:
            out.append(cls_id)
            inserted.append(True)
        chunk = content[start : min(start + interval, n)]
        out.extend(chunk)
        inserted.extend([False] * len(chunk))
    out.append(eos_id)
    inserted.append(False)
    return out, inserted


def mcls_pool(hidden: torch.Tensor, cls_mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Mean of the hidden states at CLS positions, then L2-normalised.

    Args:
        hidden: (B, L, H) last hidden states.
        cls_mask: (B, L) bool, True at every CLS position (leading and inserted).
        normalize: apply ``F.normalize`` after averaging.

    Returns:
        (B, H) dense vectors.
    """
    return mean_pool(hidden, cls_mask, normalize)


def mcls_forward(
    model: M3Model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    inserted: torch.Tensor,
    *,
    dense: bool = True,
    sparse: bool = True,
    colbert: bool = True,
) -> M3Output:
    """One encoder pass over MCLS sequences and the three heads with the choices of the module docstring.

    Args:
        model: the M3 model.
        input_ids: (B, L) ids with inserted CLS tokens, right-padded.
        attention_mask: (B, L) 1 on real tokens (inserted CLS tokens included).
        inserted: (B, L) bool, True where a CLS token was inserted.

    Returns:
        ``M3Output`` whose ``dense`` is the MCLS mean, whose ``sparse_weights`` are 0 at every CLS, and whose
        ``colbert_mask`` is False at inserted CLS rows (those vectors are zero).
    """
    hidden = model.encode_hidden(input_ids, attention_mask)  # (B, L, H)
    content_mask = attention_mask * (~inserted).to(attention_mask.dtype)  # (B, L)
    out = model.heads(hidden, input_ids, content_mask, dense=False, sparse=sparse, colbert=colbert)
    if dense:
        cls_mask = attention_mask.bool() & (inserted | _first(inserted))  # (B, L)
        out.dense = mcls_pool(hidden, cls_mask, normalize=model.dense_head.normalize)
    return out


def _first(like: torch.Tensor) -> torch.Tensor:
    """(B, L) bool mask, True at position 0 only (the leading CLS)."""
    mask = torch.zeros_like(like, dtype=torch.bool)
    mask[:, 0] = True
    return mask
