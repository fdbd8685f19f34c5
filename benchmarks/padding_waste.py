"""Padding waste of the length-grouped sampler against random batching, on the offline demo corpus.

Run ``.venv/bin/python -m benchmarks.padding_waste [--out DIR]``. It builds (or reuses) the demo
corpus, runs one epoch of each data source through :class:`m3lit.data.datamodule.M3DataModule` and
counts tokens: ``padded / real`` = (sum of every sub-batch's rows x padded length) / (real tokens), for
queries and passages together (1.00 = no padding). Random batching = one bucket; length-grouped = the
demo config's buckets [0,64), [64,128), [128,192), [192,256] with the SAME batch size, so only the grouping
differs; each also with and without sub-batching (each sub-batch padded to its own length). Counting is
deterministic (seeded sampler), so one run suffices. Writes ``padding_waste.json`` (in ``bench_results/``
by default, :func:`benchmarks.harness.results_dir`) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks import harness as H
from m3lit.data.datamodule import M3DataModule
from m3lit.corpora.demo.build import build_demo

EDGES = [64, 128, 192]  # configs/data/demo.yaml


def epoch_tokens(dm: M3DataModule) -> dict:
    """Real and padded tokens of one epoch of the active source."""
    real = padded = steps = queries = 0
    for batch in dm.iter_batches():
        for sub in (*batch.queries, *batch.passages):
            real += int(sub.attention_mask.sum())
            padded += sub.input_ids.numel()
        steps += 1
        queries += batch.num_queries
    return {
        "steps": steps,
        "queries": queries,
        "real_tokens": real,
        "padded_tokens": padded,
        "ratio": padded / real,
    }


def measure(demo, source: str, grouped: bool, sub_batch: bool, batch_size: int) -> dict:
    buckets = len(EDGES) + 1 if grouped else 1
    dm = M3DataModule(
        train_data=str(demo.train),
        pairs_data=str(demo.pairs),
        source=source,
        tokenizer=str(demo.tokenizer_dir),
        query_max_len=64,
        passage_max_len=256,
        bucket_edges=EDGES if grouped else [],
        bucket_batch_sizes=[batch_size] * buckets,
        pairs_bucket_batch_sizes=[batch_size] * buckets,
        sub_batch_size="auto" if sub_batch else 0,
        seed=42,
    )
    dm.setup("fit")
    counts = [0] * buckets
    for group in dm.sources[source].sampler.groups:
        counts[group.bucket] += len(group.indices)
    return {**epoch_tokens(dm), "examples_per_bucket": counts}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for padding_waste.json (default: bench_results/)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    demo = build_demo()
    rows = []
    for source, batch_size in (("labelled", 16), ("pairs", 64)):
        for sub_batch in (False, True):
            result = {}
            for grouped in (False, True):
                result[grouped] = measure(demo, source, grouped, sub_batch, batch_size)
            rows.append(
                {
                    "source": source,
                    "batch_size": batch_size,
                    "sub_batches": "auto" if sub_batch else "off",
                    "random": result[False],
                    "length_grouped": result[True],
                    "padding_saved": 1
                    - (result[True]["padded_tokens"] - result[True]["real_tokens"])
                    / (result[False]["padded_tokens"] - result[False]["real_tokens"]),
                }
            )
    report = {
        "demo": str(demo.root),
        "demo_hash": demo.manifest["hash"],
        "sizes": demo.manifest["sizes"],
        "rows": rows,
    }
    out = Path(args.out) if args.out else H.results_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "padding_waste.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print("| source (G) | batch | sub-batches | random padded/real | grouped padded/real | padding removed |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        g = 8 if r["source"] == "labelled" else 1
        print(
            f"| {r['source']} ({g}) | {r['batch_size']} | {r['sub_batches']} | {r['random']['ratio']:.3f} "
            f"| {r['length_grouped']['ratio']:.3f} | {100 * r['padding_saved']:.0f}% |"
        )
    for r in rows[::2]:
        print(f"{r['source']}: examples per bucket {EDGES} -> {r['length_grouped']['examples_per_bucket']}")
    print(f"\n{out / 'padding_waste.json'} ({time.perf_counter() - start:.1f}s)")


if __name__ == "__main__":
    main()
