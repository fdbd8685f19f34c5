"""Retrieval-evaluation wall time and peak memory on a synthetic 10,000-passage corpus, per stage.

    python -m benchmarks.eval [--quick] [--runs N] [--passages 10000] [--queries 200] [--bm25] [--threads T]

The evaluation pipeline (:mod:`m3lit.retrieval.pipeline`: load the BEIR folder, :func:`retrieve`, score every
ranking with :func:`evaluate_ranking`) with the default :class:`m3lit.retrieval.RetrievalConfig` (the
paper's depths and weights, lengths 512/512, ColBERT vectors kept as float16) in the five model modes, dense,
sparse, colbert, dense+sparse and all (the paper's columns; ``--bm25`` adds BM25). The corpus is a synthetic
BEIR folder: passages of 32-256 tokens, queries of 8-40 words of their one relevant passage (500 passages and
50 queries with ``--quick``). The model is the tiny 250k-vocabulary workload model (hidden 128, ColBERT 128);
its weights are random, so the metrics are meaningless: time and memory are what is measured.

Each run is a fresh process (:mod:`benchmarks.harness`). Reported per run: ``seconds`` (the evaluation
from loading the data to the metrics, the model already loaded), ``wall_s`` (model loading included), the
per-stage split (the pipeline's own :attr:`m3lit.retrieval.RetrievalRun.timings`), the RSS right after
the imports and the model load, the peak RSS (``ru_maxrss``) and the size of every index. m3lit only:
FlagEmbedding has no evaluation API. Writes ``bench_results/eval.json``.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from benchmarks import harness as H
from benchmarks.workload import TINY_250K, TextMaker, cache_root, get_tokenizer, model_dir

__all__ = ["build_dataset", "m3_eval", "run", "main"]


def build_dataset(n_passages: int, n_queries: int = 200, seed: int = 7) -> Path:
    """A BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv), cached under ``.cache/bench``."""
    folder = cache_root() / f"beir-{n_passages}-{n_queries}-s{seed}"
    if (folder / "qrels" / "test.tsv").exists():
        return folder
    rng = random.Random(seed)
    maker = TextMaker(get_tokenizer(), seed)
    passages = [maker.text(rng.randint(32, 256)) for _ in range(n_passages)]
    relevant = rng.sample(range(n_passages), n_queries)
    tmp = folder.with_name(folder.name + ".tmp")
    (tmp / "qrels").mkdir(parents=True, exist_ok=True)
    with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as out:
        for i, text in enumerate(passages):
            out.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    with open(tmp / "queries.jsonl", "w", encoding="utf-8") as out:
        for q, doc in enumerate(relevant):
            words = passages[doc].split()
            query = " ".join(rng.sample(words, min(len(words), rng.randint(8, 40))))
            out.write(json.dumps({"_id": f"q{q}", "text": query}) + "\n")
    with open(tmp / "qrels" / "test.tsv", "w", encoding="utf-8") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for q, doc in enumerate(relevant):
            out.write(f"q{q}\td{doc}\t1\n")
    tmp.rename(folder)
    return folder


def m3_eval(model_dir: str, dataset_dir: str, modes: list[str], threads: int = 0) -> dict:
    """Load the model, then load the dataset, retrieve in ``modes`` and score; time every stage.

    ``threads`` > 0 sets torch's intra-op threads (0: torch's default)."""
    import psutil
    import torch

    from benchmarks.device import bench_device
    from m3lit.model import M3Model
    from m3lit.retrieval import RetrievalConfig, evaluate_ranking, load_beir, retrieve

    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    model = M3Model.from_pretrained(model_dir).to(bench_device()).eval()
    model_loaded = time.perf_counter()
    rss_loaded = psutil.Process().memory_info().rss / 2**20
    dataset = load_beir(dataset_dir)
    data_loaded = time.perf_counter()
    run = retrieve(model, dataset, modes, RetrievalConfig(), depth=100)
    retrieved = time.perf_counter()
    metrics = {
        mode: evaluate_ranking(ranking, dataset.qrels).values for mode, ranking in run.rankings.items()
    }
    end = time.perf_counter()
    stages = {"load_model": model_loaded - start, "load_data": data_loaded - model_loaded, **run.timings}
    return {
        "seconds": end - model_loaded,
        "wall_s": end - start,
        "stages": {**stages, "metrics": end - retrieved},
        "rss_after_load_mb": rss_loaded,
        "index_mb": {
            k.removesuffix("_bytes"): v / 2**20 for k, v in run.info.items() if k.endswith("_bytes")
        },
        "colbert_store": run.info.get("colbert_store"),
        "threads": torch.get_num_threads(),
        "modes": list(metrics),
        "metrics": metrics,
    }


def run(
    quick: bool = False,
    runs: int | None = None,
    passages: int | None = None,
    queries: int | None = None,
    bm25: bool = False,
    threads: int = 0,
) -> dict:
    """Time the evaluation ``runs`` times, each in a fresh process; table + ``bench_results/eval.json``."""
    from m3lit.retrieval import DEFAULT_MODES, MODEL_MODES

    runs = runs or (1 if quick else 3)
    n = passages or (500 if quick else 10_000)
    n_queries = queries or (50 if quick else 200)
    modes = list(DEFAULT_MODES if bm25 else MODEL_MODES)
    task = {"model_dir": str(model_dir(TINY_250K)), "dataset_dir": str(build_dataset(n, n_queries))}
    task.update(modes=modes, threads=threads)
    print(f"  eval ({len(modes)} modes)", flush=True)
    results = H.alternate(
        {
            "m3lit": lambda r: H.run_subprocess(
                H.m3_command("benchmarks.eval:m3_eval", **task), timeout_s=1200
            )
        },
        {"m3lit": runs},
    )
    ok = [r.result for r in results["m3lit"] if r.ok]

    def over_runs(key: str) -> dict:
        return H.summarize([r[key] for r in ok])

    stages = sorted({k for r in ok for k in r["stages"]}, key=lambda k: -ok[0]["stages"].get(k, 0.0))
    indices = sorted({k for r in ok for k in r["index_mb"]})
    summary = {
        "total_s": over_runs("seconds"),
        "wall_s": over_runs("wall_s"),
        "stages_s": {k: H.summarize([r["stages"].get(k, 0.0) for r in ok]) for k in stages},
        "rss_after_load_mb": over_runs("rss_after_load_mb"),
        "peak_rss_mb": over_runs("peak_rss_mb"),
        "index_mb": {k: H.summarize([r["index_mb"].get(k, 0.0) for r in ok]) for k in indices},
        "modes": ok[0]["modes"] if ok else [],
        "failures": [r.status for r in results["m3lit"] if not r.ok],
    }
    label = f"{len(modes)} modes{' (BM25 included)' if bm25 else ''}, {n} passages, {n_queries} queries"
    rows = [[f"evaluation, {label} (s)", H.fmt_range(summary["total_s"], 1)]]
    rows += [[f"  {k}", H.fmt_range(v, 2)] for k, v in summary["stages_s"].items()]
    rows.append(["wall time, model loading included (s)", H.fmt_range(summary["wall_s"], 1)])
    rows.append(["RSS after imports + model load (MB)", H.fmt_range(summary["rss_after_load_mb"], 0)])
    rows.append(["peak RSS (MB)", H.fmt_range(summary["peak_rss_mb"], 0)])
    rows += [[f"  {k} (MB)", H.fmt_range(v, 1)] for k, v in summary["index_mb"].items()]
    table = "\n### eval\n" + H.format_table(["eval (median (min-max) over runs)", "m3lit"], rows)
    print(table + "".join(f"\nFAILED {f}" for f in summary["failures"]))
    payload = {
        "benchmark": "eval", "quick": quick, "env": H.environment(False), "n_passages": n,
        "n_queries": n_queries, "summary": summary, "runs": results,
    }  # fmt: skip
    H.save_json("eval", payload)
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=None, help="corpus size (default 10000, --quick 500)")
    parser.add_argument("--queries", type=int, default=None, help="queries (default 200, --quick 50)")
    parser.add_argument(
        "--bm25", action="store_true", help="also evaluate BM25 (the default modes of evaluate)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args(argv)
    run(args.quick, args.runs, args.passages, args.queries, args.bm25, args.threads)


if __name__ == "__main__":
    main()
