"""Retrieval-evaluation wall time and peak memory: the five modes + BM25 on a 10,000-passage corpus.

    python -m benchmarks.eval_10k [--passages 10000] [--queries 200] [--threads 2] [--device cpu] [--json PATH]

One process, default :class:`m3lit.retrieval.RetrievalConfig` (the paper's depths and weights, lengths
512/512, ColBERT vectors kept in memory as float16), on the synthetic BEIR folder of
:mod:`benchmarks.eval` (passages of 32-256 tokens, queries made of words of their relevant passage) and
the tiny 250k-vocabulary workload model (hidden 128, ColBERT 128; random weights, so the metrics are
meaningless: the time and memory are what is measured). Wall time covers loading the model and the data,
encoding, indexing, searching every mode, BM25 and the metrics; the per-stage split is the pipeline's own
(:attr:`m3lit.retrieval.RetrievalRun.timings`). Peak RSS is the process high-water mark
(``ru_maxrss``), next to the RSS right after the imports and the model load.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the 2-core target)")
    parser.add_argument("--device", default="cpu", help="where to encode (and run MaxSim): cpu, cuda, ...")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from benchmarks.eval import build_dataset
    from benchmarks.workload import TINY_250K, model_dir
    from m3lit.model import M3Model
    from m3lit.retrieval import DEFAULT_MODES as MODES
    from m3lit.retrieval import RetrievalConfig, evaluate_ranking, load_beir, retrieve

    dataset_dir, folder = build_dataset(args.passages, args.queries), model_dir(TINY_250K)
    start = time.perf_counter()
    model = M3Model.from_pretrained(folder).to(args.device).eval()
    dataset = load_beir(dataset_dir)
    rss_loaded = _rss_mb()
    loaded = time.perf_counter()
    run = retrieve(model, dataset, MODES, RetrievalConfig(), depth=100)
    retrieved = time.perf_counter()
    metrics = {
        mode: evaluate_ranking(ranking, dataset.qrels).values for mode, ranking in run.rankings.items()
    }
    end = time.perf_counter()
    result = {
        "passages": args.passages,
        "queries": args.queries,
        "threads": args.threads,
        "device": str(args.device),
        "wall_s": end - start,
        "stages_s": {"load": loaded - start, **run.timings, "metrics": end - retrieved},
        "rss_after_load_mb": rss_loaded,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "index_mb": {k: v / 2**20 for k, v in run.info.items() if k.endswith("_bytes")},
        "colbert_store": run.info.get("colbert_store"),
        "metrics": metrics,
    }
    print(
        f"evaluate: {args.passages} passages, {args.queries} queries, {args.threads} threads, modes {list(MODES)}"
    )
    print(f"  wall time        {result['wall_s']:8.1f} s")
    for stage, seconds in result["stages_s"].items():
        print(f"    {stage:<22} {seconds:8.2f} s")
    print(f"  RSS after load   {rss_loaded:8.0f} MB")
    print(f"  peak RSS         {result['peak_rss_mb']:8.0f} MB")
    for name, mb in result["index_mb"].items():
        print(f"    {name:<28} {mb:8.1f} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
