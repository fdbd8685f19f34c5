"""LoRA vs full fine-tuning: step time and peak memory on the training benchmark's workload.

    python -m benchmarks.lora [--quick] [--runs N] [--steps K] [--model tiny|mid] [--rank R]

Same workload and timing as :mod:`benchmarks.train` (the real training path, stage
``unified_self_distill``, batch 8, group 4, query 64 / passage 256 tokens, fp32 on CPU), run twice per
round in alternation: full fine-tuning, and ``model.net.lora`` with rank R on every encoder Linear
(``query, key, value, dense``, alpha = 2R, no adapter dropout). Peak RSS is the process's ``ru_maxrss``
(CUDA: also ``torch.cuda.max_memory_allocated``). Ratios pair run i of LoRA with run i of full. Writes
``bench_results/lora.json`` (``lora-<model>.json`` for other models).
"""

from __future__ import annotations

from benchmarks import harness as H
from benchmarks.train import MODELS, m3_overrides, step_stats
from benchmarks.workload import model_dir, train_jsonl

__all__ = ["run", "main"]

STAGE = "unified_self_distill"


def lora_override(rank: int) -> str:
    """The ``model.net.lora`` override of the LoRA side."""
    return f"model.net.lora={{r:{rank},alpha:{2 * rank},dropout:0.0,target_modules:[query,key,value,dense]}}"


def run(
    quick: bool = False, runs: int | None = None, steps: int | None = None, model: str = "tiny", rank: int = 8
):
    runs = runs or (1 if quick else 3)
    steps = steps or (2 if quick else 6)
    batch = 2 if quick else 8
    spec = MODELS[model]
    folder, data, warmup = str(model_dir(spec)), str(train_jsonl(64)), 1
    base = m3_overrides(folder, data, stage=STAGE, batch_size=batch, steps=warmup + steps)
    variants = {"full": base, f"lora r={rank}": [*base, lora_override(rank)]}
    sides = {
        name: lambda r, o=overrides: H.run_subprocess(
            H.m3_command("benchmarks.train:m3_train", overrides=o, warmup_steps=warmup), timeout_s=900
        )
        for name, overrides in variants.items()
    }
    print(f"  lora vs full ({model})", flush=True)
    results = H.alternate(sides, dict.fromkeys(sides, runs))
    summary = {name: step_stats(res) for name, res in results.items()}
    full, lora = results["full"], results[f"lora r={rank}"]
    pairs = {
        "step_time_lora_over_full": H.pair_ratios(
            summary[f"lora r={rank}"]["run_median_step_s"], summary["full"]["run_median_step_s"]
        ),
        "peak_rss_lora_over_full": H.pair_ratios(
            [r.result["peak_rss_mb"] for r in lora if r.ok], [r.result["peak_rss_mb"] for r in full if r.ok]
        ),
    }
    gpu = {name: [r.result.get("peak_gpu_mb") for r in res if r.ok] for name, res in results.items()}
    rows = [
        [
            name,
            H.fmt_range(s["step_s"], 3),
            H.fmt_range(s["tokens_per_s"], 0),
            H.fmt_range(s["peak_rss_mb"], 0),
        ]
        for name, s in summary.items()
    ]
    rows.append(
        [
            "LoRA / full",
            H.fmt_range(pairs["step_time_lora_over_full"], 3),
            "",
            H.fmt_range(pairs["peak_rss_lora_over_full"], 3),
        ]
    )
    table = "\n### lora vs full\n" + H.format_table(["train step", "s/step", "tokens/s", "peak RSS MB"], rows)
    print(table)
    payload = {
        "benchmark": "lora", "quick": quick, "model": model, "model_spec": spec.__dict__, "env": H.environment(),
        "workload": {"stage": STAGE, "batch_size": batch, "group_size": 4, "query_max_len": 64,
                     "passage_max_len": 256, "lora": lora_override(rank)},
        "summary": summary, "ratios": pairs, "peak_gpu_mb": gpu, "runs": results,
    }  # fmt: skip
    H.save_json("lora" if model == "tiny" else f"lora-{model}", payload)
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="measured steps per run (after 1 warm-up)")
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny", help="tiny (the workload) or mid")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank r (alpha = 2r)")
    args = parser.parse_args(argv)
    run(args.quick, args.runs, args.steps, args.model, args.rank)


if __name__ == "__main__":
    main()
