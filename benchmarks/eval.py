"""End-to-end retrieval evaluation time: the five modes on a 10,000-passage corpus.

    python -m benchmarks.eval [--quick] [--runs N]

:func:`m3lit.retrieval.evaluate_retrieval` with modes dense, sparse, colbert, dense+sparse and all (the
paper's columns) on a synthetic BEIR folder: 10,000 passages of 32-256 tokens, 200 queries of 8-48 tokens
made of words of their relevant passage, one relevant passage each (500 passages, 50 queries with --quick). The
model is the tiny 250k-vocabulary workload model; its metrics are meaningless (random weights), its time
is what is measured: loading, encoding queries and corpus, building the dense / sparse / ColBERT indices,
searching and re-ranking in every mode, and scoring. The per-stage split comes from the pipeline's own
timings (:class:`m3lit.retrieval.pipeline.RetrievalRun`). m3lit only: FlagEmbedding has no evaluation API.
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
            out.write(
                json.dumps(
                    {"_id": f"q{q}", "text": " ".join(rng.sample(words, min(len(words), rng.randint(8, 40))))}
                )
                + "\n"
            )
    with open(tmp / "qrels" / "test.tsv", "w", encoding="utf-8") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for q, doc in enumerate(relevant):
            out.write(f"q{q}\td{doc}\t1\n")
    tmp.rename(folder)
    return folder


def m3_eval(model_dir: str, dataset_dir: str) -> dict:
    """Time ``evaluate_retrieval`` over the five model modes; capture the pipeline's stage timings."""
    from benchmarks.device import bench_device
    from m3lit.model import M3Model
    from m3lit.retrieval import pipeline

    model = M3Model.from_pretrained(model_dir).to(bench_device()).eval()
    runs: list = []
    real_retrieve = pipeline.retrieve

    def retrieve_and_keep(*args, **kwargs):  # the real function; its RetrievalRun is kept for the timings
        result = real_retrieve(*args, **kwargs)
        runs.append(result)
        return result

    pipeline.retrieve = retrieve_and_keep
    try:
        start = time.perf_counter()
        metrics = pipeline.evaluate_retrieval(model, dataset_dir, modes=pipeline.MODEL_MODES)
        seconds = time.perf_counter() - start
    finally:
        pipeline.retrieve = real_retrieve
    return {
        "seconds": seconds,
        "modes": list(metrics),
        "metrics": metrics,
        "stages": runs[-1].timings if runs else {},
    }


def run(quick: bool = False, runs: int | None = None, flag: bool = False) -> dict:
    """Time the evaluation ``runs`` times; table + ``bench_results/eval.json``."""
    runs = runs or (1 if quick else 3)
    n, n_queries = (500, 50) if quick else (10000, 200)
    folder, dataset = str(model_dir(TINY_250K)), str(build_dataset(n, n_queries))
    print("  eval", flush=True)
    results = H.alternate(
        {
            "m3lit": lambda r: H.run_subprocess(
                H.m3_command("benchmarks.eval:m3_eval", model_dir=folder, dataset_dir=dataset), timeout_s=1200
            )
        },
        {"m3lit": runs},
    )
    ok = [r for r in results["m3lit"] if r.ok]
    total = H.summarize([r.result["seconds"] for r in ok])
    stages = sorted({k for r in ok for k in r.result["stages"]})
    summary = {
        "total_s": total,
        "stages_s": {k: H.summarize([r.result["stages"].get(k, 0.0) for r in ok]) for k in stages},
        "peak_rss_mb": H.summarize([r.result["peak_rss_mb"] for r in ok]),
        "modes": ok[0].result["modes"] if ok else [],
        "failures": [r.status for r in results["m3lit"] if not r.ok],
    }
    rows = [[f"evaluate_retrieval, 5 modes, {n} passages (s)", H.fmt_range(total, 1)]]
    rows += [[f"  {k}", H.fmt_range(v, 2)] for k, v in summary["stages_s"].items()]
    rows.append(["peak RSS (MB)", H.fmt_range(summary["peak_rss_mb"], 0)])
    table = "\n### eval\n" + H.format_table(["eval (median (min-max) over runs)", "m3lit"], rows)
    print(table + "".join(f"\nFAILED {f}" for f in summary["failures"]))
    payload = {
        "benchmark": "eval",
        "quick": quick,
        "env": H.environment(False),
        "n_passages": n,
        "summary": summary,
        "runs": results,
    }
    H.save_json("eval", payload)
    return payload


def main(argv: list[str] | None = None) -> None:
    args = H.bench_parser(__doc__.splitlines()[0]).parse_args(argv)
    run(quick=args.quick, runs=args.runs)


if __name__ == "__main__":
    main()
