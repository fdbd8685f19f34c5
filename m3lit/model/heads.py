"""The three BGE-M3 scoring heads on top of the encoder's last hidden states H (B, L, H).

BGE-M3, arXiv:2402.03216 §3.2 ("Hybrid retrieval"):

* dense: e = norm(H[:, 0]) (no parameters);
* lexical: w_i = ReLU(W_lex^T H[:, i]) per token, special tokens zeroed;
* multi-vector: E = norm(W_mul^T H[:, 1:]) per token but CLS, padding rows zeroed.

The heads are plain ``nn.Module``s with the FlagEmbedding parameter layout (``sparse_linear`` is
``Linear(H, 1)``, ``colbert_linear`` is ``Linear(H, colbert_dim)``, both with bias), so their state dicts
are exactly the ``sparse_linear.pt`` / ``colbert_linear.pt`` files of a FlagEmbedding checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DenseHead", "SparseHead", "ColbertHead", "mean_pool"]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Mean of the hidden states where ``mask`` is set, then (optionally) L2-normalised.

    Mean pooling of released models such as multilingual-e5 (``mask`` = attention mask) and the MCLS
    average (``mask`` = CLS positions, :mod:`m3lit.inference.mcls`).

    Args:
        hidden: (B, L, H) last hidden states.
        mask: (B, L) bool or 0/1, the positions to average.
        normalize: apply ``F.normalize`` after averaging.

    Returns:
        (B, H) vectors.
    """
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
    count = weights.sum(1).clamp_min(1)  # (B, 1)
    pooled = (hidden * weights).sum(1) / count  # (B, H)
    return F.normalize(pooled, dim=-1) if normalize else pooled


class DenseHead(nn.Module):
    """CLS pooling followed by L2 normalisation (``F.normalize``, eps 1e-12, as the reference)."""

    def __init__(self, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = normalize

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, L, H) hidden states -> (B, H) dense vectors."""
        cls = hidden[:, 0]
        return F.normalize(cls, dim=-1) if self.normalize else cls


class SparseHead(nn.Module):
    """Per-token lexical weights ReLU(Linear(H, 1)(h_i)), with special-token positions set to 0.

    Args:
        hidden_size: encoder width H.
        special_token_ids: ids whose weights are always zero (the tokenizer's cls/bos, eos/sep, pad and
            unk ids; read from the tokenizer, never hard-coded). Zeroing per position is equivalent to the
            reference's zeroing of those vocabulary columns after max-pooling.
    """

    def __init__(self, hidden_size: int, special_token_ids: Sequence[int]) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        self.register_buffer(
            "special_token_ids",
            torch.tensor(sorted(set(special_token_ids)), dtype=torch.long),
            persistent=False,
        )

    def forward(
        self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, L, H) hidden states, (B, L) ids and optional (B, L) mask -> (B, L) non-negative weights.

        Positions with a special id, or masked out by ``attention_mask``, get weight exactly 0.
        """
        weights = torch.relu(self.linear(hidden)).squeeze(-1)  # (B, L)
        # (B, L, S) comparison instead of torch.isin: same result, and ONNX-exportable (m3lit.model.onnx_export)
        keep = (input_ids.unsqueeze(-1) != self.special_token_ids).all(-1)  # (B, L)
        if attention_mask is not None:
            keep = keep & attention_mask.bool()
        return weights * keep.to(weights.dtype)


class ColbertHead(nn.Module):
    """Multi-vector head: Linear(H, Dc) on tokens 1..L-1 (CLS dropped), padding zeroed, then L2-normalised.

    ``colbert_dim <= 0`` means Dc = H, as in FlagEmbedding (released bge-m3: 1024 x 1024).
    """

    def __init__(self, hidden_size: int, colbert_dim: int = -1, normalize: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, colbert_dim if colbert_dim > 0 else hidden_size)
        self.normalize = normalize

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, H), (B, L) -> vectors (B, L-1, Dc) and their boolean mask (B, L-1)."""
        mask = attention_mask[:, 1:].bool()  # (B, L-1)
        vecs = self.linear(hidden[:, 1:]) * mask.unsqueeze(-1).to(hidden.dtype)  # (B, L-1, Dc)
        if self.normalize:
            # In float32: F.normalize's eps (1e-12) is 0 in fp16, so padded zero rows would become 0/0 = NaN.
            vecs = F.normalize(vecs.float(), dim=-1).to(vecs.dtype)  # zero rows stay zero
        return vecs, mask
