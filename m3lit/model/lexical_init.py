"""Start a fresh lexical head as an idf term weighter, fitted to the corpus by one ridge regression.

BGE-M3's lexical weight of token i is ``w_i = ReLU(W_lex h_i + b)`` and its score is
``s_lex = sum over shared tokens t of w_q,t * w_p,t`` (arXiv:2402.03216 §3.2, the e_lex / s_lex equations).
A freshly initialised ``W_lex`` does not know which tokens matter. BM25 weighs a matched term by its
inverse document frequency, so if ``w_i ~ c * sqrt(idf(t_i))`` then ``s_lex ~ c^2 * sum idf(t)`` over
the shared tokens: a BM25-like match (binary term frequency, no length normalisation) from step 0.
A pretrained encoder's last hidden states identify their token well, so one ridge regression from
``h_i`` (H,) to ``c * sqrt(idf(t_i))`` sets ``W_lex`` (1, H) and ``b`` (1,); training then reweights
by context. ``c`` is chosen so that the mean fitted weight is ``mean_weight``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from m3lit import scores

__all__ = ["fit_lexical_head", "token_idf"]


def token_idf(documents: Sequence[Sequence[int]]) -> dict[int, float]:
    """BM25's idf of every token id in ``documents`` (each a sequence of token ids):
    ``ln(1 + (N - df + 0.5) / (df + 0.5))`` with N documents and df the documents holding the token."""
    df = Counter(t for doc in documents for t in set(doc))
    idf = scores.bm25_idf(np.array(list(df.values()), np.float64), len(documents))
    return dict(zip(df, idf.tolist(), strict=True))


def fit_lexical_head(
    model,
    texts: Sequence[str],
    *,
    sample: int = 1500,
    mean_weight: float = 0.1,
    ridge: float = 1.0,
    max_length: int = 128,
    batch_size: int = 32,
    seed: int = 0,
) -> float:
    """Set ``model.sparse_head.linear`` so that its pre-ReLU output fits ``c * sqrt(idf)`` token by token.

    Args:
        model: an :class:`~m3lit.model.M3Model` (its encoder is run in eval mode, without gradients).
        texts: the corpus the idf is counted on (every text is one document), e.g. the training texts.
        sample: texts drawn (with ``seed``) whose non-special tokens are the regression's rows.
        mean_weight: ``c`` makes the mean target equal this (0.1: the scale of ``sparse_init_uniform``).
        ridge: L2 penalty on ``W_lex`` (the bias is not penalised).
        max_length: truncation of the sampled texts.
        batch_size: texts per forward pass.

    Returns:
        R^2 of the fit on its own rows (how much of the idf the hidden states explain).
    """
    if not texts:
        raise ValueError("fit_lexical_head: no texts to count idf on")
    tokenizer = model.tokenizer
    idf = token_idf(tokenizer(list(texts), add_special_tokens=False)["input_ids"])
    special = torch.tensor(sorted(tokenizer.all_special_ids))
    chosen = sorted(random.Random(seed).sample(range(len(texts)), min(sample, len(texts))))
    device = next(model.parameters()).device
    rows, targets = [], []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(chosen), batch_size):
            batch = [texts[i] for i in chosen[start : start + batch_size]]
            enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model.encoder(**enc.to(device)).last_hidden_state  # (B, L, H)
            ids = enc["input_ids"].cpu()
            keep = enc["attention_mask"].cpu().bool() & ~torch.isin(ids, special)  # (B, L)
            rows.append(hidden.cpu()[keep].double())  # (n, H)
            targets.append(torch.tensor([idf[t] for t in ids[keep].tolist()], dtype=torch.float64).sqrt())
    model.train(was_training)
    x, y = torch.cat(rows), torch.cat(targets)
    y = y * (mean_weight / y.mean())
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)  # (n, H + 1): the bias column last
    penalty = ridge * torch.eye(xb.shape[1], dtype=x.dtype)
    penalty[-1, -1] = 0.0
    coef = torch.linalg.solve(xb.T @ xb + penalty, xb.T @ y)  # (H + 1,)
    linear = model.sparse_head.linear
    with torch.no_grad():
        linear.weight.copy_(coef[:-1].to(linear.weight.dtype)[None])
        linear.bias.fill_(float(coef[-1]))
    residual = ((xb @ coef - y) ** 2).sum()
    return float(1.0 - residual / ((y - y.mean()) ** 2).sum())
