"""The scoring half of :class:`~m3lit.inference.M3Embedder`: FlagEmbedding's score methods, same formulas.

BGE-M3, arXiv:2402.03216 §3.2, at inference temperature 1 (spec §1.5-1.6, §5):

* ``dense``   = <e_q, e_p> (normalised CLS vectors);
* ``sparse``  = sum over shared token ids t of w_q,t * w_p,t (max-pooled lexical weights);
* ``colbert`` = (1 / n_q) sum_i max_j <E_q,i, E_p,j>;
* ``sparse+dense`` = (w_s * sparse + w_d * dense) / (w_d + w_s);
* ``colbert+sparse+dense`` = (w_d * dense + w_s * sparse + w_c * colbert) / (w_d + w_s + w_c),

with ``weights_for_different_modes = [w_d, w_s, w_c]`` (default [1, 1, 1]).

``compute_score`` reproduces FlagEmbedding's batch semantics exactly: pairs are encoded in input order in
batches of ``batch_size``, queries and passages each padded to the longest in the batch, and the padded
passage positions hold zero ColBERT vectors that take part in the max (so a negative best match is read as
0 for a passage shorter than the longest one in its batch). ``colbert_score`` on the unpadded vectors of
``encode`` has no such clipping; on trained models the two agree because best matches are positive.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from m3lit.encoding import pad_batch, tokenize_texts
from m3lit.scores import (
    colbert_scores,
    colbert_scores_pairwise,
    dense_scores_pairwise,
    fused_scores,
    sparse_scores_pairwise,
)

__all__ = ["InferenceScoresMixin", "SCORE_KEYS"]

log = logging.getLogger(__name__)

#: The keys of ``compute_score``'s result, in FlagEmbedding's order.
SCORE_KEYS = ("colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense")


class InferenceScoresMixin:
    """Score methods of ``M3Embedder`` (needs ``model``, ``tokenizer``, ``target_devices``, ``_replica``)."""

    def compute_lexical_matching_score(
        self,
        lexical_weights_1: dict[str, float] | list[dict[str, float]],
        lexical_weights_2: dict[str, float] | list[dict[str, float]],
    ) -> float | np.ndarray:
        """Sum of w1[t] * w2[t] over the token ids t of the first dict found in the second.

        Dict x dict -> a scalar; list x list -> an (N1, N2) array of every pair.
        """
        if isinstance(lexical_weights_1, dict) and isinstance(lexical_weights_2, dict):
            return _lexical_score(lexical_weights_1, lexical_weights_2)
        if isinstance(lexical_weights_1, list) and isinstance(lexical_weights_2, list):
            return np.array([[_lexical_score(a, b) for b in lexical_weights_2] for a in lexical_weights_1])
        raise ValueError(
            "The input format of lexical_weights is not correct: give two dicts or two lists of dicts."
        )

    def colbert_score(self, q_reps: np.ndarray, p_reps: np.ndarray) -> torch.Tensor:
        """MaxSim of one query's (n_q, Dc) vectors against one passage's (n_p, Dc): a 0-d tensor."""
        q, p = torch.from_numpy(np.asarray(q_reps)), torch.from_numpy(np.asarray(p_reps))
        q_mask = torch.ones(1, q.shape[0], dtype=torch.bool)
        p_mask = torch.ones(1, p.shape[0], dtype=torch.bool)
        return colbert_scores(q[None], q_mask, p[None], p_mask)[0, 0]

    def convert_id_to_token(self, lexical_weights: dict | list[dict]) -> dict | list[dict]:
        """Replace the token-id keys by the decoded tokens (one dict in, or a one-item list: one dict out)."""
        items = [lexical_weights] if isinstance(lexical_weights, dict) else list(lexical_weights)
        converted = [
            {self.tokenizer.decode([int(key)]): weight for key, weight in item.items()} for item in items
        ]
        return converted[0] if len(converted) == 1 else converted

    @torch.no_grad()
    def compute_score(
        self,
        sentence_pairs: list[tuple[str, str]] | tuple[str, str],
        batch_size: int | None = None,
        max_query_length: int | None = None,
        max_passage_length: int | None = None,
        weights_for_different_modes: list[float] | None = None,
        **kwargs: Any,
    ) -> dict[str, list[float]] | dict[str, float]:
        """Every score of each (query, passage) pair (see the module docstring for formulas and batching).

        Args:
            sentence_pairs: a list of (query, passage) pairs, or one pair (then each value is a float).
            batch_size: pairs per forward pass (default: the constructor's).
            max_query_length / max_passage_length: truncation lengths (default: the constructor's).
            weights_for_different_modes: [w_dense, w_sparse, w_colbert]; None means [1, 1, 1].
            **kwargs: ``device`` to run on (default: the first target device).

        Returns:
            ``{key: list of floats}`` for the keys of ``SCORE_KEYS`` (``[]`` for an empty list of pairs).
        """
        unknown = set(kwargs) - {"device"}
        if unknown:
            raise TypeError(f"compute_score() got unexpected keyword arguments {sorted(unknown)}")
        if isinstance(sentence_pairs, list) and len(sentence_pairs) == 0:
            return []
        single = isinstance(sentence_pairs[0], str)
        pairs = [sentence_pairs] if single else list(sentence_pairs)
        for i, pair in enumerate(pairs):
            if len(pair) != 2 or not all(isinstance(t, str) for t in pair):
                raise ValueError(
                    f"sentence_pairs[{i}] must be a (query, passage) pair of strings, got {pair!r}"
                )
        if weights_for_different_modes is None:
            weights_for_different_modes = [1.0, 1.0, 1.0]
            log.info("default weights for dense, sparse, colbert are [1.0, 1.0, 1.0]")
        elif len(weights_for_different_modes) != 3:
            raise ValueError(f"weights_for_different_modes needs 3 values, got {weights_for_different_modes}")
        self._check_heads(True, True)
        batch_size = self.batch_size if batch_size is None else batch_size
        max_q = self.query_max_length if max_query_length is None else max_query_length
        max_p = self.passage_max_length if max_passage_length is None else max_passage_length
        device = torch.device(kwargs.get("device") or self.target_devices[0])
        model = self._replica(device)
        scores: dict[str, list[float]] = {key: [] for key in SCORE_KEYS}
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            q = _encode_padded(model, [pair[0] for pair in batch], max_q, device)
            p = _encode_padded(model, [pair[1] for pair in batch], max_p, device)
            dense = dense_scores_pairwise(q.dense.float(), p.dense.float())
            sparse = sparse_scores_pairwise(
                q.sparse_weights.float(), q.token_ids, p.sparse_weights.float(), p.token_ids
            )
            all_positions = torch.ones_like(
                p.colbert_mask
            )  # padded zero vectors join the max (see docstring)
            colbert = colbert_scores_pairwise(
                q.colbert.float(), q.colbert_mask, p.colbert.float(), all_positions
            )
            weights = list(weights_for_different_modes)
            parts = {
                "colbert": colbert,
                "sparse": sparse,
                "dense": dense,
                "sparse+dense": fused_scores(dense, sparse, None, weights, normalize=True),
                "colbert+sparse+dense": fused_scores(dense, sparse, colbert, weights, normalize=True),
            }
            for key in SCORE_KEYS:
                scores[key].extend(parts[key].cpu().tolist())
        if single:
            return {key: values[0] for key, values in scores.items()}
        return scores


def _lexical_score(lw1: dict, lw2: dict) -> float:
    total = 0
    for token, weight in lw1.items():
        if token in lw2:
            total += weight * lw2[token]
    return total


def _encode_padded(model, texts: Sequence[str], max_length: int, device: torch.device):
    """One padded forward pass over ``texts`` with all three heads (truncated to ``max_length``)."""
    ids = tokenize_texts(model.tokenizer, texts, min(max_length, model.max_length))
    input_ids, attention_mask = pad_batch(ids, model.tokenizer.pad_token_id)
    with torch.inference_mode():
        return model(input_ids.to(device), attention_mask.to(device))
