"""Peak memory vs batch size at passage length 512: split-batch, gradient cache, and FlagEmbedding.

    python -m benchmarks.memory [--quick] [--runs N] [--no-flag] [--batches 8,16,32,64] [--flag-batches 1,2]

The tiny 250k-vocabulary workload model, group size 4, query 64 / passage 512 tokens, unified +
self-distillation, two optimizer steps per run (the second step is the steady state: AdamW moments,
gradients and activations coexist). m3lit runs its real training path (:func:`benchmarks.train.m3_train`)
in two sub-batch modes with the same sub-batch size (16 rows, the reference's size at length 512):

* ``split``: paper App. B.3 split-batch: sub-batches encoded with graph, activation checkpointing on;
* ``gradcache``: the exact gradient cache (representations first without graph, then one sub-batch at a
  time with graph), no activation checkpointing needed.

FlagEmbedding's trainer (no sub-batching, its default) runs at the small batches it fits in (its issue
figures: 4.1 / 7.4 / 15.4 GB at batch 1 / 2 / 4, out of memory at 8 on 24 GB). Memory = the worker's peak
RSS; on CUDA the peak allocated GPU memory. Growth = peak(largest batch) / peak(smallest batch) - 1.
"""

from __future__ import annotations

from benchmarks import harness as H
from benchmarks.train import m3_overrides, step_stats
from benchmarks.workload import TINY_250K, cache_root, model_dir, train_jsonl

__all__ = ["MODES", "run", "main"]

#: m3lit sub-batch modes: (model.sub_batch_mode, activation checkpointing).
MODES = {"split": ("split", True), "gradcache": ("gradcache", False)}


def run(
    quick: bool = False,
    runs: int | None = None,
    flag: bool = True,
    batches: list[int] | None = None,
    flag_batches: list[int] | None = None,
    sub_batch_size: int = 16,
) -> dict:
    """Sweep batch sizes for both m3lit modes (and FlagEmbedding); table + ``bench_results/memory.json``."""
    runs = runs or 1
    batches = batches or ([2, 4] if quick else [8, 16, 32, 64])
    flag_batches = flag_batches or ([1] if quick else [1, 2])
    passage_len = 128 if quick else 512
    folder = str(model_dir(TINY_250K))
    data = str(train_jsonl(2 * max(batches), query_tokens=96, passage_tokens=passage_len + 88, seed=5))
    sides = {}
    for mode, (sub_mode, ckpt) in MODES.items():
        for b in batches:
            overrides = m3_overrides(
                folder, data, stage="unified_self_distill", batch_size=b, passage_max_len=passage_len, steps=2,
                sub_batch_mode=sub_mode, sub_batch_size=sub_batch_size, gradient_checkpointing=ckpt,
            )  # fmt: skip
            sides[f"m3lit {mode} B={b}"] = lambda r, o=overrides: H.run_subprocess(
                H.m3_command("benchmarks.train:m3_train", overrides=o, warmup_steps=1), timeout_s=900
            )
    if flag:
        for b in flag_batches:
            sides[f"flag B={b}"] = lambda r, b=b: H.run_subprocess(
                H.flag_command(
                    "train", model_dir=folder, train_data=data, output_dir=str(cache_root() / f"flag-mem-{b}-{r}"),
                    warmup_steps=1, steps=1, batch_size=b, passage_max_len=passage_len,
                ),
                timeout_s=900,
            )  # fmt: skip
    print("  memory", flush=True)
    results = H.alternate(sides, dict.fromkeys(sides, runs))
    summary, rows = {}, []
    for name, res in results.items():
        summary[name] = {**step_stats(res), **H.peak_memory(res)}
        failed = "; ".join(summary[name]["failures"])
        rows.append(
            [name, H.fmt_range(summary[name]["peak_mb"], 0), H.fmt_range(summary[name]["step_s"], 2), failed]
        )
    growth_rows = []
    for mode in MODES:
        peaks = [summary[f"m3lit {mode} B={b}"]["peak_mb"]["median"] for b in batches]
        if None not in peaks:
            growth = peaks[-1] / peaks[0] - 1
            summary[f"growth {mode} B={batches[0]}->{batches[-1]}"] = growth
            growth_rows.append(
                f"{mode}: peak grows {100 * growth:.1f}% from batch {batches[0]} to {batches[-1]}"
            )
    table = f"\n### memory (passage length {passage_len})\n"
    table += H.format_table(["run", "peak MB (median (min-max))", "s/step", "failures"], rows)
    print(table + "\n" + "\n".join(growth_rows))
    payload = {
        "benchmark": "memory", "quick": quick, "env": H.environment(flag), "passage_max_len": passage_len,
        "query_max_len": 64, "group_size": 4, "sub_batch_size": sub_batch_size, "batches": batches,
        "flag_batches": flag_batches if flag else [], "summary": summary, "runs": results,
    }  # fmt: skip
    H.save_json("memory", payload)
    return payload


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--batches", type=_ints, default=None, help="m3lit batch sizes (default 8,16,32,64)")
    parser.add_argument(
        "--flag-batches", type=_ints, default=None, help="FlagEmbedding batch sizes (default 1,2)"
    )
    parser.add_argument("--sub-batch-size", type=int, default=16, help="rows per sub-batch (both modes)")
    args = parser.parse_args(argv)
    run(args.quick, args.runs, H.want_flag(args), args.batches, args.flag_batches, args.sub_batch_size)


if __name__ == "__main__":
    main()
