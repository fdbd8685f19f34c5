"""Encoding throughput: ``M3Embedder.encode`` vs ``BGEM3FlagModel.encode``, all three outputs.

    python -m benchmarks.encode [--quick] [--runs N] [--no-flag]

2,000 passages of 50-500 tokens (uniform, exact counts; 100 passages with --quick), batch size 256, max
length 512, dense + lexical weights + ColBERT vectors, on the tiny 250k-vocabulary workload model. Both
sides are timed after a warm-up call on 64 passages; tokens are counted with special tokens, after
truncation. Reports passages/s and tokens/s.
"""

from __future__ import annotations

import numpy as np

from benchmarks import harness as H
from benchmarks.workload import TINY_250K, model_dir, read_texts, write_texts

__all__ = ["m3_encode", "run", "main"]


def m3_encode(
    model_dir: str,
    texts: str,
    batch_size: int = 256,
    max_length: int = 512,
    warmup: int = 64,
    mcls_interval: int | None = None,
) -> dict:
    """``M3Embedder(...).encode`` with dense, sparse and ColBERT outputs; timed after a warm-up call.
    ``mcls_interval``: multiple-CLS pooling (App. B.2, :mod:`m3lit.inference.mcls`) every this many tokens."""
    from benchmarks.api_calls import timed_encode
    from benchmarks.device import bench_device
    from m3lit.inference.embedder import M3Embedder

    device = bench_device()
    model = M3Embedder(model_dir, devices=str(device), use_fp16=False, use_bf16=device.type == "cuda")
    kw = {"mcls_interval": mcls_interval} if mcls_interval else {}
    return timed_encode(
        model, read_texts(texts), batch_size=batch_size, max_length=max_length, warmup=warmup, **kw
    )


def inputs(quick: bool, n_texts: int | None = None) -> dict:
    """The passages file and model folder both sides read (cached); ``n``: number of passages."""
    n = n_texts or (100 if quick else 2000)
    lengths = np.random.default_rng(3).integers(48, 499, n).tolist()  # + <s> </s> = 50..500 tokens
    return {
        "texts": str(write_texts(f"encode-{n}", lengths, seed=3)),
        "model_dir": str(model_dir(TINY_250K)),
        "n": n,
    }


def run(quick: bool = False, runs: int | None = None, flag: bool = True, n_texts: int | None = None) -> dict:
    """Side-by-side encode benchmark; prints the table and writes ``bench_results/encode.json``.

    (``make bench`` runs the same tasks inside :func:`benchmarks.score.run`'s worker processes instead.)
    """
    runs = runs or (1 if quick else 3)
    paths = inputs(quick, n_texts)
    task = {"model_dir": paths["model_dir"], "texts": paths["texts"]}
    print("  encode", flush=True)
    sides = {
        "m3lit": lambda r: H.run_subprocess(
            H.m3_command("benchmarks.encode:m3_encode", **task), timeout_s=900
        ),
        "flag": lambda r: H.run_subprocess(H.flag_command("encode", **task), timeout_s=900),
    }
    results = H.alternate(sides, {"m3lit": runs, "flag": runs if flag else 0})
    return report(results, quick, paths["n"], flag)


def report(results: dict[str, list[H.RunResult]], quick: bool, n: int, flag: bool) -> dict:
    """Print the encode table from each side's runs and write ``bench_results/encode.json``."""
    summary, rows = {}, []
    for unit, key in (("passages/s", "texts"), ("tokens/s", "tokens")):
        rates = {
            side: [r.result[key] / r.result["seconds"] for r in results[side] if r.ok] for side in results
        }
        entry = {side: H.summarize(v) for side, v in rates.items()}
        entry["speedup"] = H.pair_ratios(rates["m3lit"], rates["flag"])
        summary[unit] = entry
        rows.append(
            [
                f"encode {n} passages ({unit})",
                H.fmt_range(entry["m3lit"], 0),
                H.fmt_range(entry["flag"], 0),
                H.fmt_range(entry["speedup"], 2),
            ]
        )
    rss = {side: H.summarize([r.result["peak_rss_mb"] for r in results[side] if r.ok]) for side in results}
    summary["peak_rss_mb"] = rss
    rows.append(["peak RSS (MB)", H.fmt_range(rss["m3lit"], 0), H.fmt_range(rss["flag"], 0), ""])
    failures = [f"{side}: {r.status}" for side in results for r in results[side] if not r.ok]
    if failures:
        summary["failures"] = failures
    table = "\n### encode\n" + H.format_table(
        ["encode (median (min-max) over runs)", "m3lit", "FlagEmbedding", "m3lit / Flag"], rows
    )
    print(table + "".join(f"\nFAILED {f}" for f in failures))
    payload = {
        "benchmark": "encode",
        "quick": quick,
        "env": H.environment(flag),
        "n_texts": n,
        "summary": summary,
        "runs": results,
    }
    H.save_json("encode", payload)
    return payload


def main(argv: list[str] | None = None) -> None:
    args = H.bench_parser(__doc__.splitlines()[0]).parse_args(argv)
    run(quick=args.quick, runs=args.runs, flag=H.want_flag(args))


if __name__ == "__main__":
    main()
