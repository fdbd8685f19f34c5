"""GPU mode: training tokens/s, MFU and peak GPU memory at the paper's lengths and batch sizes (CUDA only).

    python -m benchmarks.gpu [--quick] [--runs N] [--points 512:48,2048:20,8192:8] [--model base|large]

On a CUDA device (bf16 autocast, PyTorch SDPA attention), m3lit's real training path
(:func:`benchmarks.train.m3_train`, unified + self-distillation, exact gradient cache, the reference's
sub-batch table by length) runs a randomly initialised XLM-R encoder of the ``base`` shape (12 layers,
hidden 768; ``large`` = 24 x 1024 as BGE-M3) with the offline tokenizer, group size 8 (1 positive + 7 hard
negatives, paper App. B.1), queries of 64 tokens and passages of each point's length, at the per-GPU batch
sizes of the paper's Table 9 fine-tuning buckets (48 at <500 tokens, 20 at 1000-2000, 8 at >= 7000).
Reports s/step, tokens/s, model FLOPs (:mod:`benchmarks.flops`) and MFU against the card's data-sheet bf16
peak and against a measured bf16 GEMM. Without CUDA it says so and does nothing.
"""

from __future__ import annotations

import os

from benchmarks import harness as H
from benchmarks.flops import EncoderShape, step_flops
from benchmarks.train import m3_overrides
from benchmarks.workload import ModelSpec, model_dir, train_jsonl

__all__ = ["SHAPES", "POINTS", "run", "main"]

SHAPES = {
    "tiny": ModelSpec(
        vocab_size=0, hidden_size=128, num_layers=2, num_heads=2, intermediate_size=256, max_length=8192
    ),
    "base": ModelSpec(
        vocab_size=0, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, max_length=8192
    ),
    "large": ModelSpec(
        vocab_size=0, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096, max_length=8192
    ),
}
#: (passage length, per-GPU batch): paper Table 9 fine-tuning buckets / 24 GPUs (spec §4.3).
POINTS = ((512, 48), (2048, 20), (8192, 8))
GROUP, QUERY_LEN = 8, 64


def run(quick: bool = False, runs: int | None = None, points=None, model: str = "base") -> dict:
    """Sweep (length, batch) points; table + ``bench_results/gpu.json``. A no-op without CUDA."""
    import torch

    if (
        not torch.cuda.is_available() and os.environ.get("M3LIT_BENCH_GPU_ON_CPU") != "1"
    ):  # =1: smoke-test on CPU
        print("\n### gpu\nno CUDA device: GPU mode skipped (run on a machine with a GPU)")
        return {}
    runs = runs or 1
    points = points or (((256, 8), (1024, 4)) if quick else POINTS)
    spec = SHAPES[model]
    folder = str(model_dir(spec))
    sides = {"peak": lambda r: H.run_subprocess(H.m3_command("benchmarks.mfu:m3_peak"), timeout_s=120)}
    for length, batch in points:
        data = str(
            train_jsonl(
                2 * batch, query_tokens=QUERY_LEN + 16, passage_tokens=length + 64, n_neg=GROUP - 1, seed=11
            )
        )
        o = m3_overrides(folder, data, stage="unified_self_distill", batch_size=batch, group_size=GROUP, query_max_len=QUERY_LEN,
                         passage_max_len=length, steps=3, sub_batch_mode="gradcache", sub_batch_size="auto")  # fmt: skip
        sides[f"len {length} B={batch}"] = lambda r, o=o: H.run_subprocess(
            H.m3_command("benchmarks.train:m3_train", overrides=o), timeout_s=600
        )
    print(f"  gpu ({model})", flush=True)
    results = H.alternate(sides, dict.fromkeys(sides, runs))
    peaks = [r.result for r in results["peak"] if r.ok]
    spec_peak = peaks[0]["spec_bf16"] if peaks else None
    measured = H.summarize([p["bf16"] for p in peaks])
    shape = EncoderShape(spec.hidden_size, spec.intermediate_size, spec.num_layers, spec.hidden_size)
    summary, rows = {"spec_peak_bf16": spec_peak, "measured_peak_bf16": measured}, []
    for (length, batch), name in zip(points, [k for k in sides if k != "peak"], strict=True):
        ok = [r for r in results[name] if r.ok]
        flops = step_flops(shape, [QUERY_LEN] * batch, [length] * (batch * GROUP))["total"]
        times = [t for r in ok for t in r.result["step_times"]]
        tokens = [
            n / t
            for r in ok
            for n, t in zip(r.result["tokens_per_step"], r.result["step_times"], strict=False)
        ]
        entry = {
            "step_s": H.summarize(times), "tokens_per_s": H.summarize(tokens), "flops_per_step": flops,
            "mfu_vs_spec": H.summarize([flops / t / spec_peak for t in times]) if spec_peak else None,
            "mfu_vs_measured": H.summarize([flops / t / measured["median"] for t in times]) if measured["n"] else None,
            "peak_gpu_mb": H.summarize([r.result.get("peak_gpu_mb", 0.0) for r in ok]),
            "failures": [r.status for r in results[name] if not r.ok],
        }  # fmt: skip
        summary[name] = entry
        rows.append([name, H.fmt_range(entry["step_s"], 2), H.fmt_range(entry["tokens_per_s"], 0), f"{flops / 1e12:.1f}",
                     H.fmt_range(entry["mfu_vs_spec"], 1, 100) + " %" if entry["mfu_vs_spec"] else "n/a",
                     H.fmt_range(entry["mfu_vs_measured"], 1, 100) + " %" if entry["mfu_vs_measured"] else "n/a",
                     H.fmt_range(entry["peak_gpu_mb"], 0), "; ".join(entry["failures"])])  # fmt: skip
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    table = f"\n### gpu ({device}, {model}: {spec.num_layers} x {spec.hidden_size}, G={GROUP}, bf16, gradient cache)\n"
    table += H.format_table(
        [
            "point",
            "s/step",
            "tokens/s",
            "TFLOP/step",
            "MFU vs spec",
            "MFU vs GEMM",
            "peak GPU MB",
            "failures",
        ],
        rows,
    )
    print(table)
    payload = {"benchmark": "gpu", "quick": quick, "model": model, "model_spec": spec.__dict__, "points": [list(p) for p in points],
               "env": H.environment(False), "summary": summary, "runs": results}  # fmt: skip
    H.save_json("gpu", payload)
    return payload


def _points(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in (item.split(":") for item in text.split(",") if item)]


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--points", type=_points, default=None, help="length:batch pairs (default 512:48,2048:20,8192:8)"
    )
    parser.add_argument("--model", choices=sorted(SHAPES), default="base")
    args = parser.parse_args(argv)
    run(args.quick, args.runs, args.points, args.model)


if __name__ == "__main__":
    main()
