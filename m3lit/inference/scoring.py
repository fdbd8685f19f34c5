"""The scoring half of :class:`~m3lit.inference.embedder.M3Embedder`: FlagEmbedding's score methods, same formulas.

BGE-M3, arXiv:2402.03216 §3.2, at inference temperature 1 (spec §1.5-1.6, §5):

* ``dense``   = <e_q, e_p> (normalised CLS vectors);
* ``sparse``  = sum over shared token ids t of w_q,t * w_p,t (max-pooled lexical weights);
* ``colbert`` = (1 / n_q) sum_i max_j <E_q,i, E_p,j>;
* ``sparse+dense`` = (w_s * sparse + w_d * dense) / (w_d + w_s);
* ``colbert+sparse+dense`` = (w_d * dense + w_s * sparse + w_c * colbert) / (w_d + w_s + w_c),

with ``weights_for_different_modes = [w_d, w_s, w_c]`` (default [1, 1, 1]).

``compute_score`` gives FlagEmbedding's results, batch semantics included: the reference encodes pairs in
input order in batches of ``batch_size``, queries and passages each padded to the longest in the batch, and
its padded passage positions hold zero ColBERT vectors that take part in the max (so a negative best match
is read as 0 for a passage shorter than the longest one in its batch). m3lit computes the same numbers with
less work: within a window of a few batches it encodes each distinct token sequence once (queries repeat
in re-ranking; a text used as query and as passage with the same tokens counts once), in length-sorted
batches with little padding (:func:`~m3lit.inference.encoding.forward_batches`); then, per reference batch, it pads
the per-text outputs to that batch's layout (zero ColBERT vectors after each passage, up to the batch's
longest) and scores pairwise with the padded positions in the max, exactly as the reference. Padding does
not change an encoder's outputs at real tokens beyond float rounding, so the scores agree to ~1e-6.
``colbert_score`` on the unpadded vectors of ``encode`` has no such clipping; on trained models the two
agree because best matches are positive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from m3lit.inference.encoding import MAX_PADDING, forward_batches, tokenize_texts
from m3lit.model import M3Output
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
        window = batch_size * _WINDOW_BATCHES  # whole reference batches, so their layouts are kept
        for start in range(0, len(pairs), window):
            chunk = pairs[start : start + window]
            q_rows, p_rows, outputs = _encode_distinct(model, chunk, max_q, max_p, batch_size, device)
            for b in range(0, len(chunk), batch_size):
                q = _padded(outputs, q_rows[b : b + batch_size], model.tokenizer.pad_token_id)
                p = _padded(outputs, p_rows[b : b + batch_size], model.tokenizer.pad_token_id)
                parts = _pair_scores(q, p, list(weights_for_different_modes))
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


#: Reference batches per window of pairs whose distinct texts are encoded together (bounds memory).
_WINDOW_BATCHES = 4


@dataclass
class _TextOutputs:
    """Per distinct token sequence u (views into the batch outputs): its token ids (n_u,), normalised
    dense vector (H,), lexical weights (n_u,) and ColBERT vectors (n_u - 1, Dc)."""

    ids: list[torch.Tensor]
    dense: list[torch.Tensor]
    sparse: list[torch.Tensor]
    colbert: list[torch.Tensor]


def _encode_distinct(model, pairs, max_q: int, max_p: int, batch_size: int, device: torch.device):
    """Encode every distinct token sequence of ``pairs`` once, longest first, in batches of ``batch_size``.

    Returns (q_rows, p_rows, outputs): per pair, the row in ``outputs`` of its query and of its passage.
    """
    rows: dict[tuple[int, ...], int] = {}

    def side(texts: list[str], max_length: int) -> list[int]:
        distinct = list(dict.fromkeys(texts))
        ids = tokenize_texts(model.tokenizer, distinct, min(max_length, model.max_length))
        row_of_text = {
            text: rows.setdefault(tuple(row), len(rows)) for text, row in zip(distinct, ids, strict=True)
        }
        return [row_of_text[text] for text in texts]

    q_rows = side([pair[0] for pair in pairs], max_q)
    p_rows = side([pair[1] for pair in pairs], max_p)
    sequences = list(rows)  # row order
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))  # longest first
    items = [(list(sequences[i]), None) for i in order]
    per_row: list[tuple | None] = [None] * len(sequences)
    done = 0
    for chunk, out, _ in forward_batches(model, items, batch_size, device, max_padding=MAX_PADDING):
        for k in range(len(chunk)):
            n = len(chunk[k][0])
            per_row[order[done + k]] = (
                out.token_ids[k, :n],
                out.dense[k],
                out.sparse_weights[k, :n],
                out.colbert[k, : n - 1],
            )
        done += len(chunk)
    outputs = (
        _TextOutputs(*map(list, zip(*per_row, strict=True))) if per_row else _TextOutputs([], [], [], [])
    )
    return q_rows, p_rows, outputs


def _padded(outputs: _TextOutputs, rows: list[int], pad_id: int) -> M3Output:
    """The outputs of ``rows`` right-padded to their longest, as one padded forward pass would give them.

    Padding: ``pad_id`` with weight 0 (lexical), zero vectors (ColBERT; what ``ColbertHead`` writes at
    padded positions), with ``colbert_mask`` False there.
    """
    colbert = pad_sequence([outputs.colbert[r] for r in rows], batch_first=True)  # (B, Lmax - 1, Dc)
    lengths = torch.tensor([outputs.colbert[r].shape[0] for r in rows], device=colbert.device)
    return M3Output(
        token_ids=pad_sequence([outputs.ids[r] for r in rows], batch_first=True, padding_value=pad_id),
        dense=torch.stack([outputs.dense[r] for r in rows]),
        sparse_weights=pad_sequence([outputs.sparse[r] for r in rows], batch_first=True),
        colbert=colbert,
        colbert_mask=torch.arange(colbert.shape[1], device=colbert.device)[None] < lengths[:, None],
    )


def _pair_scores(q: M3Output, p: M3Output, weights: list[float]) -> dict[str, torch.Tensor]:
    """Scores of query row i against passage row i for every key of ``SCORE_KEYS``; each (B,)."""
    dense = dense_scores_pairwise(q.dense.float(), p.dense.float())
    sparse = sparse_scores_pairwise(
        q.sparse_weights.float(), q.token_ids, p.sparse_weights.float(), p.token_ids
    )
    # The reference's padded zero vectors join the max (module docstring): every padded position counts.
    all_positions = torch.ones_like(p.colbert_mask)
    colbert = colbert_scores_pairwise(q.colbert.float(), q.colbert_mask, p.colbert.float(), all_positions)
    return {
        "colbert": colbert,
        "sparse": sparse,
        "dense": dense,
        "sparse+dense": fused_scores(dense, sparse, None, weights, normalize=True),
        "colbert+sparse+dense": fused_scores(dense, sparse, colbert, weights, normalize=True),
    }
