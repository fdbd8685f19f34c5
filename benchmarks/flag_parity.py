"""Parity and encode throughput: m3lit's ``M3Embedder`` against FlagEmbedding's ``BGEM3FlagModel``.

Run (after ``make flag-env``, which builds ``.venv-flag`` with FlagEmbedding==1.4.2)::

    .venv/bin/python benchmarks/flag_parity.py            # tiny random model, 64 texts, 500 for speed
    .venv/bin/python benchmarks/flag_parity.py --n-speed 0  # parity only

What it does:

1. builds a tiny random XLM-R (hidden 64, 2 layers, ColBERT 64 x 64 as bge-m3) with m3lit's offline tokenizer and saves
   it with ``M3Model.save_pretrained`` (the FlagEmbedding layout + sentence-transformers files);
2. encodes the same texts and scores the same pairs with ``M3Embedder`` here and with ``BGEM3FlagModel``
   in ``.venv-flag`` (a subprocess running this file with ``--flag-side``; arrays travel in .npz/JSON);
3. prints the largest absolute difference per output: dense vectors, every lexical weight (a token present
   on one side only counts with its full weight), every ColBERT vector, every ``compute_score`` key,
   ``compute_lexical_matching_score`` and ``colbert_score``; target <= 1e-5 (fp32, CPU);
4. times ``encode`` (dense + sparse + ColBERT) of ``--n-speed`` passages on both sides, same thread count.

FlagEmbedding is never imported by m3lit; when ``.venv-flag`` is missing or FlagEmbedding fails to import,
its side is skipped with the reason printed. Results go to ``bench_results/flag_parity.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FLAG_PYTHON = ROOT / ".venv-flag" / "bin" / "python"
WEIGHTS = [0.4, 0.2, 0.4]
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


# ------------------------------------------------------------------------------------------ flag side
def flag_side(model_dir: str, inputs: str, output: str, threads: int) -> None:
    """Runs inside .venv-flag: only FlagEmbedding, torch and numpy are imported."""
    import torch
    from FlagEmbedding import BGEM3FlagModel

    torch.set_num_threads(threads)
    spec = json.loads(Path(inputs).read_text(encoding="utf-8"))
    model = BGEM3FlagModel(model_dir, use_fp16=False, devices="cpu")
    results = run_api(model, spec)
    speed = time_encode(model, spec["speed_texts"]) if spec["speed_texts"] else None
    save_results(results, speed, output)


# ------------------------------------------------------------------------------------------ shared
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


def time_encode(model, texts: list[str], repeats: int = 3) -> dict:
    """Best of ``repeats`` wall times for encoding ``texts`` with all three outputs (after one warm-up)."""
    model.encode(texts[:32], batch_size=32, return_sparse=True, return_colbert_vecs=True)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.encode(texts, batch_size=32, max_length=512, return_sparse=True, return_colbert_vecs=True)
        best = min(best, time.perf_counter() - start)
    return {"texts": len(texts), "seconds": best, "texts_per_s": len(texts) / best}


def save_results(results: dict, speed: dict | None, path: str) -> None:
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
    meta["speed"] = speed
    Path(path + ".json").write_text(json.dumps(meta), encoding="utf-8")


def load_results(path: str) -> tuple[dict, dict | None]:
    arrays = np.load(path)
    meta = json.loads(Path(path + ".json").read_text(encoding="utf-8"))
    results = {
        k: arrays[k] for k in ("dense", "query_dense", "single_dense", "lexical_matrix", "colbert_score")
    }
    results["colbert"] = [arrays[f"colbert_{i}"] for i in range(meta["n_colbert"])]
    results.update({k: meta[k] for k in ("lexical", "compute_score", "single_is_dict")})
    return results, meta["speed"]


# ------------------------------------------------------------------------------------------ m3lit side
def api_inputs(n_texts: int = 64, max_length: int = 256, n_speed: int = 0) -> dict:
    """What :func:`run_api` reads: ``n_texts`` texts, 8 queries, ``n_texts`` (query, passage) pairs."""
    texts = corpus(n_texts)
    return {
        "texts": texts,
        "queries": [" ".join(t.split()[:6]) for t in texts[:8]],
        "pairs": [
            [" ".join(texts[i].split()[:8]), texts[(i * 7 + 3) % len(texts)]] for i in range(len(texts))
        ],
        "max_length": max_length,
        "speed_texts": corpus(n_speed) if n_speed else [],
    }


def build_model(folder: Path, seed: int = 0) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-texts", type=int, default=64, help="texts compared for parity")
    parser.add_argument("--n-speed", type=int, default=500, help="passages timed per side (0: no timing)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads on both sides")
    parser.add_argument("--max-length", type=int, default=256, help="passage truncation for parity")
    parser.add_argument("--out", default=str(ROOT / "bench_results" / "flag_parity.json"))
    parser.add_argument("--flag-side", nargs=3, metavar=("MODEL", "INPUTS", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flag_side:
        flag_side(*args.flag_side, threads=args.threads)
        return 0

    import torch

    from m3lit import M3Embedder

    torch.set_num_threads(args.threads)
    spec = api_inputs(args.n_texts, args.max_length, args.n_speed)
    report: dict = {"target": TARGET, "device": "cpu", "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        build_model(model_dir)
        embedder = M3Embedder(str(model_dir), use_fp16=False, devices="cpu")
        ours = run_api(embedder, spec)
        report["m3lit_speed"] = time_encode(embedder, spec["speed_texts"]) if spec["speed_texts"] else None
        inputs = Path(tmp) / "inputs.json"
        inputs.write_text(json.dumps(spec), encoding="utf-8")
        theirs, flag_speed, reason = run_flag(model_dir, inputs, Path(tmp) / "flag.npz", args.threads)
    report["flag_speed"] = flag_speed
    if theirs is None:
        print(f"FlagEmbedding side SKIPPED: {reason}")
        report["skipped"] = reason
    else:
        diffs = compare(ours, theirs)
        report["max_abs_diff"] = diffs
        print(f"{'output':44s} max |m3lit - FlagEmbedding|")
        for name, value in diffs.items():
            print(f"{name:44s} {value:.3e}  {'ok' if value <= TARGET else 'ABOVE TARGET'}")
        report["pass"] = all(v <= TARGET for v in diffs.values())
    for side in ("m3lit_speed", "flag_speed"):
        if report.get(side):
            s = report[side]
            print(
                f"{side:12s} encode {s['texts']} passages (dense+sparse+colbert): {s['texts_per_s']:.1f} passages/s"
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if report.get("pass", True) else 1


def run_flag(
    model_dir: Path, inputs: Path, output: Path, threads: int
) -> tuple[dict | None, dict | None, str]:
    """Run the FlagEmbedding side in .venv-flag; (results, speed, reason-if-skipped)."""
    if not FLAG_PYTHON.exists():
        return None, None, f"{FLAG_PYTHON} not found; create it with `make flag-env`"
    probe = subprocess.run([str(FLAG_PYTHON), "-c", "import FlagEmbedding"], capture_output=True, text=True)
    if probe.returncode != 0:
        return (
            None,
            None,
            f"`import FlagEmbedding` fails in .venv-flag: {probe.stderr.strip().splitlines()[-1:]}",
        )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [
        str(FLAG_PYTHON),
        __file__,
        "--threads",
        str(threads),
        "--flag-side",
        str(model_dir),
        str(inputs),
        str(output),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return None, None, f"FlagEmbedding run failed: {done.stderr.strip()[-2000:]}"
    results, speed = load_results(str(output))
    return results, speed, ""


if __name__ == "__main__":
    sys.exit(main())
