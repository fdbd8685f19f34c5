"""Peak memory of training with attention dropout on, per doubling of the passage length (up to 8192 tokens).

    python -m benchmarks.long_memory [--quick] [--runs N] [--lengths 1024,2048,4096,8192]

The setting of docs/long-documents.md's 8192-token runs: the small benchmark XLM-R (2 layers, hidden
128, 2 heads, 250,002-token vocabulary) with positions for 8192 tokens and dropout 0.1 on hidden states and
attention probabilities; stage-2 steps (unified + self-distillation), batch 1, group size 2, query 64 tokens
and passages of exactly each length, gradient checkpointing, the gradient cache with
``data.sub_batch_size=auto``; two optimizer steps per run, m3lit's real training path
(:func:`benchmarks.train.m3_train`) in a fresh subprocess per point (peak RSS). Two rows:

* ``m3lit dropout``: m3lit's CPU dropout attention (``model.net.fast_cpu_dropout=true``, the default),
  chunked over query blocks, no L x L matrix (:mod:`m3lit.model.chunked_attention`);
* ``torch dropout``: PyTorch SDPA with dropout (``fast_cpu_dropout=false``), whose CPU path materialises
  the (B, heads, L, L) probabilities and mask.

Growth per doubling = peak(2L) / peak(L); issue 31 asks for at most x1.25 with dropout on.
"""

from __future__ import annotations

from benchmarks import harness as H
from benchmarks.train import m3_overrides, step_stats
from benchmarks.workload import ModelSpec, model_dir, train_jsonl

__all__ = ["LONG_SPEC", "VARIANTS", "run", "main"]

#: The small benchmark model with positions for 8192 tokens.
LONG_SPEC = ModelSpec(max_length=8192)
#: Row name -> extra overrides.
VARIANTS = {"m3lit dropout": [], "torch dropout": ["model.net.fast_cpu_dropout=false"]}


def run(quick: bool = False, runs: int | None = None, lengths: list[int] | None = None) -> dict:
    """Peak RSS per (variant, length), alternating; growth per doubling; ``bench_results/long_memory.json``."""
    runs = runs or 1
    lengths = lengths or ([256, 512] if quick else [1024, 2048, 4096, 8192])
    folder = str(model_dir(LONG_SPEC))
    sides = {}
    for length in lengths:
        data = str(train_jsonl(4, query_tokens=96, passage_tokens=length + 64, n_neg=1, seed=8))
        base = m3_overrides(folder, data, stage="unified_self_distill", batch_size=1, group_size=2,
                            passage_max_len=length, steps=2, sub_batch_mode="gradcache", sub_batch_size="auto",
                            gradient_checkpointing=True)  # fmt: skip
        for name, extra in VARIANTS.items():
            sides[f"{name} L={length}"] = lambda r, o=base + extra: H.run_subprocess(
                H.m3_command("benchmarks.train:m3_train", overrides=o, warmup_steps=1), timeout_s=900
            )
    print("  long_memory", flush=True)
    results = H.alternate(sides, dict.fromkeys(sides, runs))
    summary = {name: {**step_stats(res), **H.peak_memory(res)} for name, res in results.items()}
    rows = []
    for name in VARIANTS:
        peaks = [summary[f"{name} L={n}"]["peak_mb"].get("median") for n in lengths]
        growth = [b / a if a and b else None for a, b in zip(peaks, peaks[1:], strict=False)]
        summary[f"{name} growth per doubling"] = growth
        rows.append([name, *(f"{p:.0f}" if p else "failed" for p in peaks),
                     " ".join(f"x{g:.2f}" if g else "n/a" for g in growth)])  # fmt: skip
    table = "\n### long_memory (peak RSS MB, attention dropout 0.1, batch 1, group 2)\n"
    print(table + H.format_table(["run", *(f"L={n}" for n in lengths), "growth per doubling"], rows))
    payload = {"benchmark": "long_memory", "quick": quick, "env": H.environment(False), "lengths": lengths,
               "model_spec": LONG_SPEC.__dict__, "summary": summary, "runs": results}  # fmt: skip
    H.save_json("long_memory", payload)
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--lengths", default=None, help="comma list of passage lengths (doublings)")
    args = parser.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else None
    run(args.quick, args.runs, lengths)


if __name__ == "__main__":
    main()
