"""Naive reference computations for the inference tests: one text at a time, formulas written out.

BGE-M3, arXiv:2402.03216 §3.2: dense = normalize(H[0]); lexical w_i = ReLU(W h_i + b), max per token id,
cls/eos/pad/unk dropped; ColBERT = normalize(W_c h_i + b_c) for i >= 1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def hidden_states(model, ids: list[int]) -> torch.Tensor:
    """(L, H) last hidden states of one unpadded sequence (the model is put in eval mode: no dropout)."""
    model.eval()
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        out = model.encoder(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    return out.last_hidden_state[0].float()


def lexical_dict(
    model, hidden: torch.Tensor, ids: list[int], skip: set[int] = frozenset()
) -> dict[str, float]:
    """{str(id): max weight} over positions (minus ``skip`` positions), specials and zeros dropped."""
    tok = model.tokenizer
    dropped = {tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}
    linear = model.sparse_head.linear
    with torch.no_grad():
        weights = torch.relu(hidden @ linear.weight[0].float() + linear.bias[0].float()).numpy()
    out: dict[str, float] = {}
    for pos, (w, t) in enumerate(zip(weights, ids, strict=True)):
        if pos in skip or t in dropped or w <= 0:
            continue
        if w > out.get(str(t), 0.0):
            out[str(t)] = float(w)
    return out


def colbert_rows(model, hidden: torch.Tensor) -> np.ndarray:
    linear = model.colbert_head.linear
    with torch.no_grad():
        return F.normalize(hidden @ linear.weight.float().T + linear.bias.float(), dim=-1).numpy()


def naive_encode(model, text: str, max_length: int = 512):
    """(dense (H,), lexical dict, ColBERT (n-1, Dc), ids) for one text, no padding, no batching."""
    ids = model.tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    hidden = hidden_states(model, ids)
    dense = F.normalize(hidden[0], dim=-1).numpy()
    return dense, lexical_dict(model, hidden, ids), colbert_rows(model, hidden[1:]), ids


def lexical_score(a: dict, b: dict) -> float:
    return float(sum(w * b[t] for t, w in a.items() if t in b))


def maxsim(q: np.ndarray, p: np.ndarray, clip_at_zero: bool = False) -> float:
    """(1/n_q) sum_i max_j q_i . p_j; ``clip_at_zero`` adds a zero vector to p (a padded position)."""
    sims = q @ p.T
    best = sims.max(1)
    if clip_at_zero:
        best = np.maximum(best, 0.0)
    return float(best.sum() / len(q))


def fused_score(q, p, weights=(1.0, 0.3, 1.0)) -> float:
    """w_d s_dense + w_s s_lex + w_c s_mul of two :func:`naive_encode` results (s_inter with the default weights)."""
    return (
        weights[0] * float(q[0] @ p[0])
        + weights[1] * lexical_score(q[1], p[1])
        + weights[2] * maxsim(q[2], p[2])
    )


def assert_lexical_close(got: dict, want: dict, atol: float = 1e-5) -> None:
    assert list(got) == list(want), (list(got), list(want))  # same ids in first-occurrence order
    for key, value in want.items():
        assert abs(float(got[key]) - value) <= atol, key


def train_a_few_steps(model, texts: list[str], steps: int = 3, seed: int = 0) -> None:
    """A plain optimizer loop: in-batch InfoNCE on all three scores (moves encoder and both heads)."""
    from m3lit.scores import colbert_scores, dense_scores, sparse_scores

    torch.manual_seed(seed)
    tok = model.tokenizer
    queries = [" ".join(t.split()[:5]) for t in texts]
    q = tok(queries, padding=True, truncation=True, max_length=32, return_tensors="pt")
    p = tok(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    target = torch.arange(len(texts))
    model.train()
    for _ in range(steps):
        qo = model(q["input_ids"], q["attention_mask"])
        po = model(p["input_ids"], p["attention_mask"])
        loss = (
            F.cross_entropy(dense_scores(qo.dense, po.dense) / 0.02, target)
            + F.cross_entropy(
                sparse_scores(qo.sparse_weights, qo.token_ids, po.sparse_weights, po.token_ids), target
            )
            + F.cross_entropy(
                colbert_scores(qo.colbert, qo.colbert_mask, po.colbert, po.colbert_mask) / 0.02, target
            )
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
