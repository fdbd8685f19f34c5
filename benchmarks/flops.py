"""Model FLOPs of a BGE-M3 training step (encoder + heads + score matrices), counted analytically.

Convention (as in the MFU literature, e.g. PaLM App. B): matrix multiplications only, 2 FLOPs per
multiply-add, backward = 2 x forward, so a training step is 3 x the forward FLOPs. Recomputation
(activation checkpointing, the gradient cache's second encoding) is *not* counted: it is work the
hardware does, not work the model needs, so it lowers MFU. Embedding lookups, layer norms, softmax,
GELU and the optimizer are not matmuls and count 0.

Per sequence of length L through an encoder of width H, FFN width F and N layers:

    forward = N * (L * (8 H^2 + 4 H F) + 4 L^2 H)      # QKV + output projections, FFN, QK^T and AV

plus the heads (ColBERT 2 (L - 1) H Dc, CLS dropped; sparse 2 L H) and the in-batch score matrices of B
queries against P passages (dense 2 B P H, ColBERT 2 (B Lq) (P Lp) Dc).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EncoderShape", "encode_flops", "encoder_forward_flops", "step_flops"]


@dataclass(frozen=True)
class EncoderShape:
    """The sizes that determine the FLOPs: width H, FFN width F, layers N, ColBERT width Dc."""

    hidden: int
    ffn: int
    layers: int
    colbert_dim: int

    @classmethod
    def from_config(cls, config, colbert_dim: int = -1) -> EncoderShape:
        dc = colbert_dim if colbert_dim > 0 else config.hidden_size
        return cls(config.hidden_size, config.intermediate_size, config.num_hidden_layers, dc)


def encoder_forward_flops(shape: EncoderShape, lengths: list[int]) -> float:
    """Forward matmul FLOPs of the encoder on sequences of the given (padded) lengths.

    >>> encoder_forward_flops(EncoderShape(hidden=2, ffn=4, layers=1, colbert_dim=2), [3])
    264.0
    """
    h, f, n = shape.hidden, shape.ffn, shape.layers
    return float(sum(n * (length * (8 * h * h + 4 * h * f) + 4 * length * length * h) for length in lengths))


def encode_flops(
    shape: EncoderShape, lengths: list[int], *, sparse: bool = True, colbert: bool = True
) -> float:
    """Forward matmul FLOPs of encoding texts of the given lengths with the heads (inference: no backward).

    The encoder (:func:`encoder_forward_flops`), the ColBERT head 2 (L - 1) H Dc (CLS dropped) and the
    sparse head 2 L H per text. Given the real (unpadded) lengths, padding a batch adds work the count
    leaves out, so it lowers the rate.

    >>> encode_flops(EncoderShape(hidden=2, ffn=4, layers=1, colbert_dim=2), [3])  # 264 + 16 + 12
    292.0
    """
    tokens = sum(lengths)
    heads = (2 * (tokens - len(lengths)) * shape.hidden * shape.colbert_dim if colbert else 0) + (
        2 * tokens * shape.hidden if sparse else 0
    )
    return encoder_forward_flops(shape, lengths) + float(heads)


def step_flops(
    shape: EncoderShape,
    query_lengths: list[int],
    passage_lengths: list[int],
    *,
    sparse: bool = True,
    colbert: bool = True,
) -> dict[str, float]:
    """Model FLOPs of one training step (forward + backward) on the given padded lengths.

    Returns ``{"encoder": ..., "heads": ..., "scores": ..., "total": ...}`` (each already x3).
    """
    h, dc = shape.hidden, shape.colbert_dim
    lengths = [*query_lengths, *passage_lengths]
    encoder = encoder_forward_flops(shape, lengths)
    tokens = sum(lengths)
    colbert_tokens = tokens - len(lengths)  # the ColBERT head skips CLS
    heads = (2 * colbert_tokens * h * dc if colbert else 0) + (2 * tokens * h if sparse else 0)
    n_q, n_p = len(query_lengths), len(passage_lengths)
    scores = 2.0 * n_q * n_p * h  # dense
    if colbert:  # CLS dropped: L - 1 vectors per text
        scores += 2.0 * sum(lq - 1 for lq in query_lengths) * sum(lp - 1 for lp in passage_lengths) * dc
    parts = {"encoder": 3 * encoder, "heads": 3.0 * heads, "scores": 3 * scores}
    parts["total"] = sum(parts.values())
    return parts
