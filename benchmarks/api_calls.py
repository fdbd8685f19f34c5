"""The same calls on m3lit's ``M3Embedder`` and FlagEmbedding's ``BGEM3FlagModel``, and their comparison.

Code that drives either class the same way, so each library runs it in its own environment: m3lit's here,
FlagEmbedding's in ``.venv-flag`` through :mod:`benchmarks.flag_worker` (task ``parity``; this module
imports only the standard library and numpy at the top, never m3lit, so that worker can import it).

* :func:`run_api` makes every call compared (``encode`` with all outputs, ``encode_queries``,
  ``compute_lexical_matching_score``, ``colbert_score``, ``compute_score``, a single string) on the inputs
  of :func:`api_inputs`; :func:`compare` gives the largest absolute difference per output (a lexical weight
  present on one side only counts with its full weight). The assertion that they agree within
  :data:`TARGET` is ``tests/integration/test_flag_parity.py`` (``make flag-parity``); ``scripts/gpu_check.py
  --parts inference`` compares GPU precisions against CPU fp32 with the same two functions.
* :func:`timed_encode` is the encode timing of :mod:`benchmarks.encode`, :mod:`benchmarks.flag_worker` and
  :mod:`benchmarks.onnx_encode` (so of :mod:`benchmarks.score` too).
* :func:`save_results` / :func:`load_results` carry :func:`run_api`'s output between the two environments.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

WEIGHTS = [0.4, 0.2, 0.4]
#: Largest absolute difference accepted between the two libraries (fp32, CPU).
TARGET = 1e-5


def corpus(n: int) -> list[str]:
    """Deterministic texts of varied length: docstrings of standard-library objects."""
    import builtins
    import collections
    import functools
    import itertools
    import json as json_module
    import math
    import os as os_module
    import re
    import string
    import textwrap

    texts = []
    for module in (
        builtins,
        os_module,
        collections,
        itertools,
        functools,
        math,
        re,
        json_module,
        string,
        textwrap,
    ):
        for name, obj in sorted(vars(module).items()):
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and doc.strip() and not name.startswith("_"):
                texts.append(" ".join(doc.split()))
    texts = list(dict.fromkeys(texts))  # unique, first-seen order
    return [texts[i % len(texts)] for i in range(n)]


def run_api(model, spec: dict) -> dict:
    """The calls compared on both sides (the same code drives either class)."""
    out = model.encode(
        spec["texts"],
        batch_size=8,
        max_length=spec["max_length"],
        return_dense=True,
        return_sparse=True,
        return_colbert_vecs=True,
    )
    q = model.encode_queries(spec["queries"], batch_size=8, return_sparse=True, return_colbert_vecs=True)
    lexical_matrix = model.compute_lexical_matching_score(q["lexical_weights"], out["lexical_weights"][:8])
    colbert_pairs = [
        float(model.colbert_score(q["colbert_vecs"][i], out["colbert_vecs"][i])) for i in range(8)
    ]
    pairs = [tuple(p) for p in spec["pairs"]]
    scores = model.compute_score(
        pairs, batch_size=8, max_passage_length=spec["max_length"], weights_for_different_modes=WEIGHTS
    )
    single = model.encode(spec["texts"][0], return_sparse=True, return_colbert_vecs=True)
    return {
        "dense": np.asarray(out["dense_vecs"], dtype=np.float32),
        "lexical": [{k: float(v) for k, v in d.items()} for d in out["lexical_weights"]],
        "colbert": [np.asarray(v, dtype=np.float32) for v in out["colbert_vecs"]],
        "query_dense": np.asarray(q["dense_vecs"], dtype=np.float32),
        "lexical_matrix": np.asarray(lexical_matrix, dtype=np.float64),
        "colbert_score": np.asarray(colbert_pairs),
        "compute_score": {k: list(map(float, v)) for k, v in scores.items()},
        "single_dense": np.asarray(single["dense_vecs"], dtype=np.float32),
        "single_is_dict": isinstance(single["lexical_weights"], dict),
    }


def timed_encode(model, texts: list[str], *, batch_size: int, max_length: int, warmup: int, **kwargs) -> dict:
    """``model.encode`` of ``texts`` with all three outputs, timed after a warm-up call on the first ``warmup``;
    the same code for ``M3Embedder`` and ``BGEM3FlagModel`` (``kwargs``: more ``encode`` options).

    Returns seconds, texts, tokens (special tokens included, after truncation) and the dense shape."""
    kw = {"batch_size": batch_size, "max_length": max_length, "return_dense": True, "return_sparse": True,
          "return_colbert_vecs": True, **kwargs}  # fmt: skip
    model.encode(texts[:warmup], **kw)
    start = time.perf_counter()
    out = model.encode(texts, **kw)
    seconds = time.perf_counter() - start
    tokens = sum(
        len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    )
    return {
        "seconds": seconds,
        "texts": len(texts),
        "tokens": tokens,
        "dense_shape": list(out["dense_vecs"].shape),
    }


def save_results(results: dict, path: str) -> None:
    """Write :func:`run_api`'s output to ``path`` (arrays, .npz) and ``path + ".json"`` (the rest)."""
    arrays = {
        "dense": results["dense"],
        "query_dense": results["query_dense"],
        "single_dense": results["single_dense"],
    }
    arrays["lexical_matrix"] = results["lexical_matrix"]
    arrays["colbert_score"] = results["colbert_score"]
    for i, vecs in enumerate(results["colbert"]):
        arrays[f"colbert_{i}"] = vecs
    np.savez(path, **arrays)
    meta = {k: results[k] for k in ("lexical", "compute_score", "single_is_dict")}
    meta["n_colbert"] = len(results["colbert"])
    Path(path + ".json").write_text(json.dumps(meta), encoding="utf-8")


def load_results(path: str) -> dict:
    """What :func:`save_results` wrote, as :func:`run_api` returned it."""
    arrays = np.load(path)
    meta = json.loads(Path(path + ".json").read_text(encoding="utf-8"))
    results = {
        k: arrays[k] for k in ("dense", "query_dense", "single_dense", "lexical_matrix", "colbert_score")
    }
    results["colbert"] = [arrays[f"colbert_{i}"] for i in range(meta["n_colbert"])]
    results.update({k: meta[k] for k in ("lexical", "compute_score", "single_is_dict")})
    return results


def api_inputs(n_texts: int = 64, max_length: int = 256) -> dict:
    """What :func:`run_api` reads: ``n_texts`` texts, 8 queries, ``n_texts`` (query, passage) pairs."""
    texts = corpus(n_texts)
    return {
        "texts": texts,
        "queries": [" ".join(t.split()[:6]) for t in texts[:8]],
        "pairs": [
            [" ".join(texts[i].split()[:8]), texts[(i * 7 + 3) % len(texts)]] for i in range(len(texts))
        ],
        "max_length": max_length,
    }


def build_model(folder: Path, seed: int = 0) -> None:
    """A tiny random XLM-R (hidden 64, 2 layers, ColBERT 64 x 64 as bge-m3) with m3lit's offline tokenizer,
    saved with ``M3Model.save_pretrained`` (FlagEmbedding's layout + sentence-transformers files)."""
    import torch

    from m3lit.model import M3Model
    from m3lit.model.tiny import tiny_xlmr_config
    from m3lit.model.tiny_tokenizer import build_tokenizer

    tokenizer = build_tokenizer(corpus(400) * 2, vocab_size=1000)
    torch.manual_seed(seed)
    config = tiny_xlmr_config(
        len(tokenizer), hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, max_length=512
    )
    M3Model.from_config(config, tokenizer).save_pretrained(folder)  # ColBERT width = hidden, as bge-m3


def compare(ours: dict, theirs: dict) -> dict[str, float]:
    """Largest absolute difference per output."""
    diffs = {
        "dense_vecs": float(np.abs(ours["dense"] - theirs["dense"]).max()),
        "encode_queries dense": float(np.abs(ours["query_dense"] - theirs["query_dense"]).max()),
        "single-string dense": float(np.abs(ours["single_dense"] - theirs["single_dense"]).max()),
    }
    lexical = 0.0
    for a, b in zip(ours["lexical"], theirs["lexical"], strict=True):
        for key in set(a) | set(b):
            lexical = max(lexical, abs(a.get(key, 0.0) - b.get(key, 0.0)))
    diffs["lexical_weights"] = lexical
    colbert = 0.0
    for a, b in zip(ours["colbert"], theirs["colbert"], strict=True):
        if a.shape != b.shape:
            raise AssertionError(f"ColBERT shapes differ: {a.shape} vs {b.shape}")
        colbert = max(colbert, float(np.abs(a - b).max()))
    diffs["colbert_vecs"] = colbert
    diffs["compute_lexical_matching_score"] = float(
        np.abs(ours["lexical_matrix"] - theirs["lexical_matrix"]).max()
    )
    diffs["colbert_score"] = float(np.abs(ours["colbert_score"] - theirs["colbert_score"]).max())
    for key, values in theirs["compute_score"].items():
        mine = ours["compute_score"][key]
        diffs[f"compute_score[{key}]"] = float(np.abs(np.asarray(mine) - np.asarray(values)).max())
    if ours["single_is_dict"] != theirs["single_is_dict"]:
        raise AssertionError("single-string lexical_weights type differs")
    return diffs
