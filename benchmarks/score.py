"""Scoring throughput: sparse and ColBERT scores, in training and at re-ranking time, vs FlagEmbedding.

    python -m benchmarks.score [--quick] [--runs N] [--no-flag]

Three measurements on the tiny 250k-vocabulary workload model (:mod:`benchmarks.workload`):

* **in-batch** (training): head + score matrix of B=8 queries (64 tokens) against 32 passages (256 tokens; 2 x 8
  with --quick),
  forward + backward, temperature 0.02. m3lit: ``SparseHead`` + :func:`m3lit.scores.sparse_scores`
  (batch-local vocabulary) and ``ColbertHead`` + :func:`m3lit.scores.colbert_scores`. FlagEmbedding:
  ``EncoderOnlyEmbedderM3Model._sparse_embedding`` in training mode (its (B, L, 250002) scatter) +
  ``compute_sparse_score``, ``_colbert_embedding`` + ``compute_colbert_score``. Both read the same saved
  hidden states and head weights, and the score matrices are compared (max abs difference).
* **re-rank** (inference): 100 candidates for each of 200 queries, from the outputs of ``encode``.
  m3lit: :class:`m3lit.retrieval.index.sparse.SparseIndex` and :class:`m3lit.retrieval.index.colbert.ColbertStore`
  (what ``evaluate_retrieval`` uses; building them from the encoder outputs is inside the timing).
  FlagEmbedding: ``compute_lexical_matching_score`` + ``colbert_score`` for each pair. Scores compared.
* **compute_score**: ``M3Embedder.compute_score`` vs ``BGEM3FlagModel.compute_score`` on (query, passage)
  pairs, encoding included. Scores compared.
"""

from __future__ import annotations

import json
import time

import numpy as np

from benchmarks import encode as encode_bench
from benchmarks import harness as H
from benchmarks.profiling import categorize, profiled, shares
from benchmarks.workload import (
    TINY_250K,
    cache_root,
    get_tokenizer,
    model_dir,
    read_texts,
    train_jsonl,
    write_texts,
)

__all__ = ["m3_inbatch", "m3_rerank", "m3_compute_score", "prepare", "run", "main"]

TEMPERATURE = 0.02
#: The measurements, in the order one worker process runs them.
WHAT = ("inbatch", "rerank", "compute_score")


# ----------------------------------------------------------------------------------- m3lit side (workers)
def _load_model(path: str):
    from benchmarks.device import bench_device
    from m3lit.model import M3Model

    return M3Model.from_pretrained(path).to(bench_device())


def m3_inbatch(model_dir: str, inputs: str, repeats: int = 3, scores_out: str = "") -> dict:
    """Sparse and ColBERT in-batch score matrices (forward + backward) from saved hidden states."""
    import torch

    from benchmarks.device import sync
    from m3lit.scores import colbert_scores, sparse_scores

    model = _load_model(model_dir).train()
    device = next(model.parameters()).device
    data = np.load(inputs)
    q_ids, p_ids = torch.from_numpy(data["q_ids"]).to(device), torch.from_numpy(data["p_ids"]).to(device)
    q_mask, p_mask = torch.from_numpy(data["q_mask"]).to(device), torch.from_numpy(data["p_mask"]).to(device)

    def hidden():
        q = torch.from_numpy(data["q_hidden"]).to(device).requires_grad_()
        p = torch.from_numpy(data["p_hidden"]).to(device).requires_grad_()
        return q, p

    def sparse_step():
        q_h, p_h = hidden()
        q_w, p_w = model.sparse_head(q_h, q_ids), model.sparse_head(p_h, p_ids)  # (B, Lq), (B*G, Lp)
        scores = sparse_scores(q_w, q_ids, p_w, p_ids) / TEMPERATURE  # (B, B*G)
        scores.sum().backward()
        return scores

    def colbert_step():
        q_h, p_h = hidden()
        (q_v, q_m), (p_v, p_m) = model.colbert_head(q_h, q_mask), model.colbert_head(p_h, p_mask)
        scores = colbert_scores(q_v, q_m, p_v, p_m) / TEMPERATURE  # (B, B*G)
        scores.sum().backward()
        return scores

    times: dict[str, list[float]] = {"sparse": [], "colbert": []}
    last = {}
    for name, step in (("sparse", sparse_step), ("colbert", colbert_step)):
        step()
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            last[name] = step().detach()
            sync(device)
            times[name].append(time.perf_counter() - start)
    if scores_out:
        np.save(
            scores_out,
            np.stack([last["sparse"].cpu().numpy(), last["colbert"].cpu().numpy()]).astype(np.float64),
        )
    return {"seconds": times}


def m3_rerank(
    model_dir: str,
    queries: str,
    passages: str,
    candidates: str,
    scores_out: str,
    max_length: int = 512,
    profile: bool = False,
) -> dict:
    """Sparse + ColBERT re-ranking of given candidates with m3lit's retrieval stores (float32 storage).

    ``profile``: record the timed region with torch.profiler and return its breakdown (slower; not timed).
    """
    from m3lit.inference.encoding import encode_texts
    from m3lit.retrieval import ColbertStore, SparseIndex, sparse_matrix

    model = _load_model(model_dir)
    kw = {"max_length": max_length, "dense": False, "sparse": True, "colbert": True}
    q = encode_texts(model, read_texts(queries), **kw)
    p = encode_texts(model, read_texts(passages), **kw)
    cands = np.asarray(read_texts(candidates), dtype=np.int64)  # (Q, K)
    vocab = model.encoder.config.vocab_size
    with profiled(profile) as prof:
        start = time.perf_counter()
        index = SparseIndex(vocab)
        index.add(p.sparse)
        sparse = index.score(sparse_matrix(q.sparse, vocab), cands)  # (Q, K)
        mid = time.perf_counter()
        store = ColbertStore(model.colbert_dim, len(p.colbert), dtype="float32")
        store.add(np.arange(len(p.colbert)), p.colbert)
        colbert = store.score(q.colbert, cands)  # (Q, K)
        end = time.perf_counter()
    np.save(scores_out, np.stack([sparse.reshape(-1), colbert.reshape(-1)]).astype(np.float64))
    out = {
        "pairs": int(cands.size),
        "sparse_seconds": mid - start,
        "colbert_seconds": end - mid,
        "seconds": end - start,
    }
    if prof is not None:
        out["profile"] = categorize(prof)
    return out


def m3_compute_score(
    model_dir: str,
    pairs: str,
    scores_out: str,
    batch_size: int = 256,
    warmup: int = 16,
    profile: bool = False,
) -> dict:
    """``M3Embedder.compute_score`` on (query, passage) pairs, timed after a warm-up call."""
    from benchmarks.device import bench_device
    from m3lit.inference.embedder import M3Embedder
    from m3lit.inference.scoring import SCORE_KEYS

    device = bench_device()
    embedder = M3Embedder(model_dir, devices=str(device), use_fp16=False, use_bf16=device.type == "cuda")
    sentence_pairs = [tuple(p) for p in read_texts(pairs)]
    weights = [0.4, 0.2, 0.4]
    embedder.compute_score(
        sentence_pairs[:warmup], batch_size=batch_size, weights_for_different_modes=weights
    )
    with profiled(profile) as prof:
        start = time.perf_counter()
        out = embedder.compute_score(
            sentence_pairs, batch_size=batch_size, weights_for_different_modes=weights
        )
        seconds = time.perf_counter() - start
    keys = ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense")
    assert set(keys) == set(SCORE_KEYS)
    np.save(scores_out, np.asarray([out[k] for k in keys], dtype=np.float64))
    result = {"pairs": len(sentence_pairs), "seconds": seconds}
    if prof is not None:
        result["profile"] = categorize(prof)
    return result


# ----------------------------------------------------------------------------------- inputs (parent)
def prepare(quick: bool) -> dict:
    """Write every input file both sides read; returns their paths and sizes."""
    tok = get_tokenizer()
    folder = model_dir(TINY_250K)
    rng = np.random.default_rng(0)
    # in-batch: real token ids of 8 queries x 64 and 32 passages x 256 from the training data
    n_q = 2 if quick else 8  # queries of the in-batch matrix (x4 passages each)
    rows = [json.loads(line) for line in train_jsonl(64).read_text().splitlines()[:n_q]]
    q_ids = tok([r["query"] for r in rows], truncation=True, max_length=64)["input_ids"]
    p_ids = tok([t for r in rows for t in [*r["pos"], *r["neg"][:3]]], truncation=True, max_length=256)[
        "input_ids"
    ]
    hidden = TINY_250K.hidden_size
    inputs = cache_root() / f"score-inbatch-{n_q}.npz"
    np.savez(
        inputs,
        q_ids=np.asarray(q_ids, np.int64),
        p_ids=np.asarray(p_ids, np.int64),
        q_mask=np.ones((n_q, 64), np.int64),
        p_mask=np.ones((4 * n_q, 256), np.int64),
        q_hidden=rng.standard_normal((n_q, 64, hidden), dtype=np.float32),
        p_hidden=rng.standard_normal((4 * n_q, 256, hidden), dtype=np.float32),
    )
    n_queries, n_passages, k = (10, 200, 100) if quick else (200, 1000, 100)
    queries = write_texts(f"score-queries-{n_queries}", rng.integers(8, 48, n_queries).tolist(), seed=1)
    passages = write_texts(f"score-passages-{n_passages}", rng.integers(50, 300, n_passages).tolist(), seed=2)
    cands = [sorted(rng.choice(n_passages, size=k, replace=False).tolist()) for _ in range(n_queries)]
    candidates = cache_root() / f"score-candidates-{n_queries}-{n_passages}.json"
    candidates.write_text(json.dumps(cands))
    n_pairs = 32 if quick else 512
    q_texts, p_texts = json.loads(queries.read_text()), json.loads(passages.read_text())
    pairs = cache_root() / f"score-pairs-{n_pairs}.json"
    pairs.write_text(
        json.dumps([[q_texts[i % n_queries], p_texts[(7 * i) % n_passages]] for i in range(n_pairs)])
    )
    return {
        "model_dir": str(folder), "inbatch": str(inputs), "queries": str(queries), "passages": str(passages),
        "candidates": str(candidates), "pairs": str(pairs), "n_queries": n_queries, "n_candidates": k, "n_pairs": n_pairs,
    }  # fmt: skip


# ----------------------------------------------------------------------------------- orchestration
def _scores_path(side: str, what: str, r: int) -> str:
    return str(cache_root() / f"scores-{what}-{side}-{r}.npy")


def _max_abs_diff(a: str, b: str) -> float | None:
    try:
        x, y = np.load(a), np.load(b)
    except OSError:
        return None
    return float(np.abs(x - y).max()) if x.shape == y.shape else None


def run(
    quick: bool = False,
    runs: int | None = None,
    flag: bool = True,
    profile: bool = True,
    encode: bool = False,
) -> dict:
    """Run the three measurements side by side; print the table; write ``bench_results/score.json``.

    ``encode``: the worker processes also run :mod:`benchmarks.encode`'s measurement, first (so its peak
    RSS is its own), and its table and JSON are written too: ``make bench`` saves one interpreter
    start-up and model load per side and round this way.
    """
    runs = runs or (1 if quick else 3)
    paths = prepare(quick)
    enc = encode_bench.inputs(quick)
    encode_task = {"model_dir": enc["model_dir"], "texts": enc["texts"]}
    repeats = 2 if quick else 3
    sides_runs = {"m3lit": runs, "flag": runs if flag else 0}
    measurements: dict[str, dict] = {}

    # One process per side and round runs the three measurements one after another (each after its own
    # warm-up), so the rounds alternate m3lit / FlagEmbedding and share one interpreter start-up per side.
    m3_tasks = lambda r: [  # noqa: E731
        *([("benchmarks.encode:m3_encode", encode_task)] if encode else []),
        ("benchmarks.score:m3_inbatch", {"model_dir": paths["model_dir"], "inputs": paths["inbatch"], "repeats": repeats, "scores_out": _scores_path("m3lit", "inbatch", r)}),
        ("benchmarks.score:m3_rerank", {"model_dir": paths["model_dir"], "queries": paths["queries"], "passages": paths["passages"], "candidates": paths["candidates"], "scores_out": _scores_path("m3lit", "rerank", r)}),
        ("benchmarks.score:m3_compute_score", {"model_dir": paths["model_dir"], "pairs": paths["pairs"], "scores_out": _scores_path("m3lit", "compute_score", r)}),
    ]  # fmt: skip
    flag_tasks = lambda r: [  # noqa: E731
        *([("encode", encode_task)] if encode else []),
        ("inbatch", {"model_dir": paths["model_dir"], "inputs": paths["inbatch"], "repeats": repeats, "sparse_repeats": 1, "scores_out": _scores_path("flag", "inbatch", r)}),
        ("rerank", {"model_dir": paths["model_dir"], "queries": paths["queries"], "passages": paths["passages"], "candidates": paths["candidates"], "scores_out": _scores_path("flag", "rerank", r)}),
        ("compute_score", {"model_dir": paths["model_dir"], "pairs": paths["pairs"], "scores_out": _scores_path("flag", "compute_score", r)}),
    ]  # fmt: skip
    print(f"  score ({', '.join((('encode',) if encode else ()) + WHAT)})", flush=True)
    sides = {
        "m3lit": lambda r: H.run_subprocess(H.m3_tasks_command(m3_tasks(r)), timeout_s=900),
        "flag": lambda r: H.run_subprocess(H.flag_tasks_command(flag_tasks(r)), timeout_s=1500),
    }
    rounds = H.alternate(sides, sides_runs)
    names = (("encode",) if encode else ()) + WHAT
    for i, what in enumerate(names):
        measurements[what] = {
            side: [res.task_results(len(names))[i] for res in results] for side, results in rounds.items()
        }
    if encode:
        encode_bench.report(measurements.pop("encode"), quick, enc["n"], flag)

    table, summary = _summarize(measurements, paths, runs)
    if profile:  # one extra m3lit process runs each inference path under torch.profiler: where the time goes
        profiled_paths = (
            ("rerank", "m3_rerank", {"queries": paths["queries"], "passages": paths["passages"], "candidates": paths["candidates"]}),
            ("compute_score", "m3_compute_score", {"pairs": paths["pairs"]}),
        )  # fmt: skip
        tasks = [
            (f"benchmarks.score:{fn}", {"model_dir": paths["model_dir"], "scores_out": _scores_path("m3lit", f"{what}-profile", 0), "profile": True, **extra})
            for what, fn, extra in profiled_paths
        ]  # fmt: skip
        profiled_run = H.run_subprocess(H.m3_tasks_command(tasks), timeout_s=900)
        for (what, _, _), res in zip(profiled_paths, profiled_run.task_results(len(tasks)), strict=True):
            summary[f"profile {what}"] = res.result.get("profile") if res.ok else {"failure": res.status}
            if res.ok:
                table += f"\nprofile of m3lit's {what} (self CPU time): {shares(res.result['profile'])}"
    print(table)
    payload = {
        "benchmark": "score",
        "quick": quick,
        "env": H.environment(flag),
        "inputs": paths,
        "summary": summary,
        "runs": measurements,
    }
    H.save_json("score", payload)
    return payload


def _rates(results: list[H.RunResult], key: str, count: float, inner: str | None = None) -> list[float]:
    """Throughput (count / seconds) of every ok run; ``inner`` picks a list inside "seconds" (median taken)."""
    rates = []
    for res in results:
        if not res.ok:
            continue
        value = res.result[key]
        if inner is not None:
            value = float(np.median(value[inner]))
        rates.append(count / value)
    return rates


def _summarize(measurements: dict, paths: dict, runs: int) -> tuple[str, dict]:
    pairs_rerank = paths["n_queries"] * paths["n_candidates"]
    rows, summary = [], {}
    metrics = {
        "inbatch sparse head+scores, fwd+bwd (ms)": ("inbatch", "seconds", None, "sparse"),
        "inbatch colbert head+scores, fwd+bwd (ms)": ("inbatch", "seconds", None, "colbert"),
        f"rerank sparse ({pairs_rerank} pairs, pairs/s)": ("rerank", "sparse_seconds", pairs_rerank, None),
        f"rerank colbert ({pairs_rerank} pairs, pairs/s)": ("rerank", "colbert_seconds", pairs_rerank, None),
        f"rerank sparse+colbert ({pairs_rerank} pairs, pairs/s)": ("rerank", "seconds", pairs_rerank, None),
        f"compute_score ({paths['n_pairs']} pairs, pairs/s)": (
            "compute_score",
            "seconds",
            paths["n_pairs"],
            None,
        ),
    }
    for label, (what, key, count, inner) in metrics.items():
        if count is None:  # a duration in ms: the speed-up is Flag's time / m3lit's
            m3 = [1000 / r for r in _rates(measurements[what]["m3lit"], key, 1.0, inner)]
            fl = [1000 / r for r in _rates(measurements[what]["flag"], key, 1.0, inner)]
            speedup = H.pair_ratios(fl, m3)
        else:
            m3 = _rates(measurements[what]["m3lit"], key, count, inner)
            fl = _rates(measurements[what]["flag"], key, count, inner)
            speedup = H.pair_ratios(m3, fl)
        entry = {"m3lit": H.summarize(m3), "flag": H.summarize(fl), "speedup": speedup}
        summary[label] = entry
        rows.append(
            [
                label,
                H.fmt_range(entry["m3lit"], 1),
                H.fmt_range(entry["flag"], 1),
                H.fmt_range(entry["speedup"], 1),
            ]
        )
    for what in measurements:
        diffs = [
            _max_abs_diff(_scores_path("m3lit", what, r), _scores_path("flag", what, r)) for r in range(runs)
        ]
        diffs = [d for d in diffs if d is not None]
        summary[f"{what} max |score diff|"] = max(diffs) if diffs else None
    for what in measurements:
        for side in ("m3lit", "flag"):
            rss = [r.result["peak_rss_mb"] for r in measurements[what][side] if r.ok]
            summary[f"{what} peak RSS MB {side}"] = H.summarize(rss)
        failed = [
            f"{side}: {r.status}" for side in ("m3lit", "flag") for r in measurements[what][side] if not r.ok
        ]
        if failed:
            summary[f"{what} failures"] = failed
    rows.append(
        [
            "worker peak RSS up to inbatch (MB)",
            H.fmt_range(summary["inbatch peak RSS MB m3lit"], 0),
            H.fmt_range(summary["inbatch peak RSS MB flag"], 0),
            "",
        ]
    )
    headers = ["score (median (min-max) over runs)", "m3lit", "FlagEmbedding", "m3lit / Flag"]
    diffs = ", ".join(
        f"{w}: {summary[f'{w} max |score diff|']:.2e}"
        for w in measurements
        if summary[f"{w} max |score diff|"] is not None
    )
    note = f"\nmax |m3lit - FlagEmbedding| score difference: {diffs or 'n/a'}"
    fails = "".join(f"\n{k}: {v}" for k, v in summary.items() if k.endswith("failures"))
    return "\n### score\n" + H.format_table(headers, rows) + note + fails, summary


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the torch.profiler runs of m3lit's paths"
    )
    args = parser.parse_args(argv)
    run(quick=args.quick, runs=args.runs, flag=H.want_flag(args), profile=not args.no_profile)


if __name__ == "__main__":
    main()
