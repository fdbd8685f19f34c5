"""Query throughput: Qdrant's local mode (``m3lit.vectordb``) beside m3lit's own search, same corpus, one run.

    M3LIT_CACHE=... python -m benchmarks.vectordb_search --model /work/runs/after_train/export [--runs N]

The corpus and queries are a BEIR folder (default: the compact Bible benchmark's ``eval/miracl/en``, 2,033
passages, 200 queries of the test split) with the MIRACL-like task's lengths (queries 128, passages 256
tokens) and fusion weights (``--hybrid-weights``, ``--all-weights``; default: the weights the trained run
chose on the dev queries, 1.0,0.5 and 1.0,1.5,1.5). The passages are encoded once with ``m3lit.encode``
(all three outputs) and loaded into an in-memory Qdrant collection (the upsert is timed); m3lit indexes the
same passages once (its corpus cache keeps them across calls).

Then, per mode set (each mode alone, then the four together), alternating sides ``--runs`` times: m3lit's
search time is the sum of its ``search/*`` stages (:func:`m3lit.retrieval.pipeline.retrieve` with the corpus
cached: query encoding excluded); the database's is :func:`m3lit.vectordb.search.search` on queries encoded
once (requests, fusion and ordering included). Both exclude query encoding, timed once beside them. Queries
per second = queries / median seconds. Each mode's nDCG@10 is printed for both sides (ColBERT stored in
float32 on both, so the lists agree). Writes ``bench_results/vectordb_search.json``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks import harness as H
from benchmarks.onnx_encode import default_beir
from benchmarks.workload import cache_root
from m3lit.retrieval.index.corpus import CorpusIndex

__all__ = ["run", "main"]

MODE_SETS = (("dense",), ("sparse",), ("dense+sparse",), ("all",), ("dense", "sparse", "dense+sparse", "all"))


def _encoded(model_ref: str, beir: Path, config, folder: str | None) -> Path:
    """The ``m3lit.encode`` output of the corpus (all three outputs), made once and kept in ``folder``."""
    from m3lit.encode import encode_file

    out = Path(folder) if folder else cache_root() / f"vectordb-{beir.parent.name}-{beir.name}"
    if not (out / "meta.json").is_file():
        encode_file(
            model=model_ref, input=str(beir / "corpus.jsonl"), output_dir=str(out), colbert=True,
            max_length=config.passage_max_len, batch_size=config.batch_size, progress=False,
        )  # fmt: skip
    return out


def _m3lit_index(model, folder: Path, config) -> CorpusIndex:
    """m3lit's in-memory indices over the same encoded passages (what ``m3lit.evaluate`` builds itself)."""
    from m3lit.retrieval.index.colbert import ColbertStore
    from m3lit.retrieval.index.dense import DenseIndex
    from m3lit.retrieval.index.sparse import SparseIndex
    from m3lit.vectordb.collection import load_encoded

    ids, dense, sparse, colbert, offsets = load_encoded(folder)
    vocab = max(model.encoder.config.vocab_size, len(model.tokenizer))
    index = CorpusIndex(DenseIndex(dense.shape[1]), None, SparseIndex(vocab))
    index.dense.add(np.asarray(dense, np.float32))
    weights = [row["weights"] for row in sparse]
    index.sparse.add(
        [(np.asarray(list(w), np.int64), np.asarray(list(w.values()), np.float32)) for w in weights]
    )
    index.colbert = ColbertStore(colbert.shape[1], len(ids), dtype=config.colbert_dtype)
    spans = zip(offsets[:-1], offsets[1:], strict=True)
    index.colbert.add(np.arange(len(ids)), [np.asarray(colbert[a:b], np.float32) for a, b in spans])
    index.info = {"colbert_store": "memory"}
    return index


def _prepare(model_ref: str, beir: Path, config, encoded: str | None, max_queries: int | None):
    """The model, dataset, Qdrant collection (with its upsert seconds) and m3lit's indices, same vectors."""
    from m3lit.model.training_checkpoint import load_model
    from m3lit.retrieval.beir import load_beir
    from m3lit.vectordb.collection import index_encoded, open_client

    model = load_model(model_ref).eval()
    dataset = load_beir(beir, "test")
    if max_queries:
        keep = slice(0, max_queries)
        dataset = replace(
            dataset,
            query_ids=dataset.query_ids[keep],
            query_texts=dataset.query_texts[keep],
            qrels=dataset.qrels[keep],
        )
    folder = _encoded(model_ref, beir, config, encoded)
    client = open_client(None)
    start = time.perf_counter()
    index_encoded(client, "bench", folder)
    upsert_s = time.perf_counter() - start
    return model, dataset, client, _m3lit_index(model, folder, config), {"qdrant_upsert_s": upsert_s}


def _rounds(model, dataset, client, index: CorpusIndex, config, runs: int) -> dict:
    from m3lit.retrieval.index.search import _corpus_key
    from m3lit.retrieval.modes import plan_retrieval
    from m3lit.retrieval.pipeline import retrieve, score_rankings
    from m3lit.vectordb.collection import doc_ids
    from m3lit.vectordb.search import dataset_rows, encode_queries, relabel, search

    start = time.perf_counter()
    queries = encode_queries(model, dataset.query_texts, config)
    encode_s = time.perf_counter() - start
    rows = dataset_rows(doc_ids(client, "bench"), dataset.corpus_ids)
    out = {"encode_queries_s": encode_s, "sets": {}}
    for modes in MODE_SETS:
        times: dict[str, list[float]] = {"m3lit": [], "qdrant": []}
        needs = set(plan_retrieval(modes, config, 100).needs)
        parts = {n: getattr(index, n) if n in needs else None for n in ("dense", "sparse", "colbert")}
        view = CorpusIndex(**parts, info=index.info)  # what m3lit would have indexed for these modes
        cache = {
            _corpus_key(dataset.corpus_texts, needs, config): view
        }  # a corpus_cache entry: no re-encoding
        for _ in range(runs):
            run = retrieve(model, dataset, modes, config, depth=100, corpus_cache=cache)
            times["m3lit"].append(sum(v for k, v in run.timings.items() if k.startswith("search/")))
            found = search(client, "bench", queries, modes, config, depth=100)
            times["qdrant"].append(found.timings["search_total"])
        ndcg = {
            "m3lit": score_rankings(run.rankings, dataset, ["ndcg@10"]),
            "qdrant": score_rankings(
                {m: relabel(r, rows) for m, r in found.rankings.items()}, dataset, ["ndcg@10"]
            ),
        }
        name = "+".join(modes) if len(modes) < 4 else "all four"
        print(f"{name}: m3lit {times['m3lit']} s, qdrant {times['qdrant']} s", file=sys.stderr, flush=True)
        out["sets"][name] = {
            "seconds": {side: H.summarize(v) for side, v in times.items()},
            "qps": {side: len(dataset.query_ids) / H.summarize(v)["median"] for side, v in times.items()},
            "ndcg@10": {side: {m: r["ndcg@10"] for m, r in res.items()} for side, res in ndcg.items()},
        }
    return out


def run(
    model_ref: str,
    beir: str | None,
    runs: int,
    hybrid_weights,
    all_weights,
    encoded: str | None = None,
    max_queries: int | None = None,
) -> dict:
    from m3lit.retrieval.config import RetrievalConfig

    folder = Path(beir) if beir else default_beir()
    config = RetrievalConfig(
        query_max_len=128, passage_max_len=256, hybrid_weights=tuple(hybrid_weights),
        all_weights=tuple(all_weights), colbert_dtype="float32",
    )  # fmt: skip
    model, dataset, client, index, setup = _prepare(model_ref, folder, config, encoded, max_queries)
    measured = _rounds(model, dataset, client, index, config, runs)
    rows = []
    for name, entry in measured["sets"].items():
        q, scores = entry["qps"], entry["ndcg@10"]
        agree = "; ".join(
            f"{m} {100 * scores['m3lit'][m]:.2f} / {100 * scores['qdrant'][m]:.2f}" for m in scores["m3lit"]
        )
        ratio = f"{q['m3lit'] / q['qdrant']:.1f}x"
        rows.append([name, f"{q['m3lit']:.0f}", f"{q['qdrant']:.1f}", ratio, agree])
    headers = ["modes", "m3lit q/s", "Qdrant local q/s", "m3lit / Qdrant", "nDCG@10 x100: m3lit / Qdrant"]
    table = H.format_table(headers, rows)
    print(table)
    print(
        f"queries: {len(dataset.query_ids)}, passages: {len(dataset.corpus_ids)}; query encoding "
        f"{measured['encode_queries_s']:.2f} s (both sides); Qdrant upsert {setup['qdrant_upsert_s']:.1f} s"
    )
    payload = {
        "model": model_ref, "dataset": str(folder), "queries": len(dataset.query_ids),
        "passages": len(dataset.corpus_ids), "config": config.to_dict(), "runs": runs, "setup": setup,
        "measured": measured, "table": table, "env": H.environment(),
    }  # fmt: skip
    H.save_json("vectordb_search", payload)
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--max-queries", type=int, default=None, help="the first N test queries only")
    parser.add_argument("--model", required=True, help="a trained export folder or .ckpt (all three heads)")
    parser.add_argument("--encoded", default=None, help="the corpus's m3lit.encode output (made if absent)")
    parser.add_argument("--beir", default=None, help="BEIR folder (default: the compact Bible miracl/en)")
    parser.add_argument("--hybrid-weights", default="1.0,0.5", help="Dense+Sparse w_dense,w_sparse")
    parser.add_argument("--all-weights", default="1.0,1.5,1.5", help="All w_dense,w_sparse,w_colbert")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    hybrid = [float(v) for v in args.hybrid_weights.split(",")]
    every = [float(v) for v in args.all_weights.split(",")]
    run(args.model, args.beir, runs, hybrid, every, args.encoded, args.max_queries)


if __name__ == "__main__":
    main()
