"""Tiny randomly initialised XLM-RoBERTa configurations for tests, offline corpora and benchmarks."""

from __future__ import annotations

from transformers import XLMRobertaConfig

__all__ = ["tiny_xlmr_config"]


def tiny_xlmr_config(
    vocab_size: int,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 64,
    max_length: int = 512,
    dropout: float = 0.1,
    pad_token_id: int = 1,
    attn_implementation: str = "sdpa",
) -> XLMRobertaConfig:
    """An XLM-R config of the given size; ``max_position_embeddings = max_length + pad_token_id + 1``
    because RoBERTa-style position ids start after the padding index (514 positions = 512 tokens)."""
    config = XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_length + pad_token_id + 1,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=pad_token_id,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
    )
    config._attn_implementation = attn_implementation
    return config
