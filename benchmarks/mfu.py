"""Model FLOPs utilisation (MFU) of a training step, and where the rest goes; on a GPU, at the paper's lengths.

    python -m benchmarks.mfu [--quick] [--runs N] [--precisions 32-true,bf16-mixed] [--no-profile] [--compare-dropout]
    python -m benchmarks.mfu --points 512:48,2048:20,8192:8 --model base     # GPU mode (gpu.json)

Model: 6 layers, hidden 384, 6 heads, FFN 1536, the offline tokenizer's 8,000-token vocabulary (so the
embedding update does not dominate; the 250k-vocabulary cost is what ``benchmarks.train`` measures).
Step: unified + self-distillation, batch 8, group size 4, query 64 / passage 256 tokens, m3lit's real
training path (:func:`benchmarks.train.m3_train`).

MFU = model FLOPs per step (:func:`benchmarks.flops.step_flops`: matmuls, backward = 2 x forward) / step
time / the machine's matmul peak, where the peak is *measured* (best large torch GEMM,
:func:`benchmarks.device.measure_matmul_peak`) in a subprocess alternating with the training runs, in the
precision the step computes its matmuls in: fp32 for ``32-true``, bf16 for ``bf16-mixed`` (AMX / tensor
cores). On CUDA the card's data-sheet bf16 peak is reported beside the measured one.

A profile run (torch.profiler, one steady step, first precision only) splits the step time into matmuls, attention, other
forward/backward ops and the optimizer, and gives the matmuls' own FLOP rate: that says what keeps MFU
below the peak.

GPU mode (``--points``; ``make bench`` runs it on a CUDA machine as ``gpu``): the same step (bf16 autocast,
PyTorch SDPA attention) on a randomly initialised XLM-R of the ``base`` shape (12 layers, hidden 768;
``large`` = 24 x 1024 as BGE-M3) with the offline tokenizer, group size 8 (1 positive + 7 hard negatives,
paper App. B.1), the exact gradient cache with the reference's sub-batch table by length, queries of 64
tokens and passages of each point's length, at the per-GPU batch sizes of the paper's Table 9 fine-tuning
buckets (48 at <500 tokens, 20 at 1000-2000, 8 at >= 7000). MFU against the measured bf16 GEMM and the
card's data-sheet bf16 peak, tokens/s and peak GPU memory per point; writes ``bench_results/gpu.json``.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from benchmarks import harness as H
from benchmarks.device import describe
from benchmarks.flops import EncoderShape, step_flops
from benchmarks.profiling import categorize, shares
from benchmarks.train import m3_overrides, step_stats
from benchmarks.workload import MID_SIZE, TINY_250K, ModelSpec, get_tokenizer, model_dir, train_jsonl

__all__ = ["POINTS", "SPECS", "m3_peak", "m3_profile", "workload_flops", "run", "main"]

BATCH, GROUP, QUERY_LEN, PASSAGE_LEN = 8, 4, 64, 256
#: Row-name suffix of the ``--compare-dropout`` runs (PyTorch's ``bernoulli_`` dropout masks).
TORCH_DROPOUT = "torch dropout"
#: --quick (a smoke test) runs a 2-layer, hidden-128 encoder instead of the mid-size one.
QUICK_SPEC = ModelSpec(vocab_size=0, hidden_size=128, num_layers=2, num_heads=2, intermediate_size=256)
#: --model e5-small: the encoder shape of multilingual-e5-small (12 layers, hidden 384, FFN 1536), the real
#: model `make train` fine-tunes; the embedding matrix is frozen there (fix_word_embeddings), as here.
E5_SMALL_SHAPE = ModelSpec(vocab_size=0, hidden_size=384, num_layers=12, num_heads=12, intermediate_size=1536)
#: The GPU mode's shapes (positions for 8192 tokens): XLM-R base and large (BGE-M3's backbone).
BASE_8K = ModelSpec(
    vocab_size=0, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, max_length=8192
)
LARGE_8K = ModelSpec(
    vocab_size=0, hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096, max_length=8192
)
SPECS = {"mid": MID_SIZE, "tiny": TINY_250K, "e5-small": E5_SMALL_SHAPE, "base": BASE_8K, "large": LARGE_8K}
#: GPU mode: (passage length, per-GPU batch) of the paper's Table 9 fine-tuning buckets / 24 GPUs (spec §4.3).
POINTS = ((512, 48), (2048, 20), (8192, 8))
POINT_GROUP = 8
#: Real tokens of one step of the workload (every text fills its max length).
WORKLOAD_TOKENS = BATCH * QUERY_LEN + BATCH * GROUP * PASSAGE_LEN
TORCH_DROPOUT_OVERRIDE = "model.net.fast_cpu_dropout=false"


class Variant(NamedTuple):
    """One row of the table: trainer precision, config overrides, model FLOPs and real tokens per step."""

    precision: str
    overrides: list[str]
    flops: float
    tokens: int


EXTRA_OVERRIDES = {"e5-small": ["model.net.fix_word_embeddings=true"]}


def workload_flops(spec: ModelSpec) -> dict[str, float]:
    """Model FLOPs of one step of the MFU workload on ``spec`` (every text fills its max length)."""
    dc = spec.colbert_dim if spec.colbert_dim > 0 else spec.hidden_size
    shape = EncoderShape(spec.hidden_size, spec.intermediate_size, spec.num_layers, dc)
    return step_flops(shape, [QUERY_LEN] * BATCH, [PASSAGE_LEN] * (BATCH * GROUP))


def shape_gemm_rate(device, dtype, tokens: int, hidden: int, ffn: int, seconds: float = 1.0) -> float:
    """FLOP/s of the encoder's own forward GEMMs, (T x H) @ (H x H), (T x H) @ (H x F) and (T x F) @ (F x H)
    in their per-layer proportions (4 : 1 : 1), best repetition of each. Compared with the large-GEMM peak
    it says how much of the MFU gap is the GEMM shapes (K = H is small) rather than non-matmul time. Each shape
    takes the faster of torch's BLAS and oneDNN (:func:`benchmarks.device.gemm_products`)."""
    import torch

    from benchmarks.device import fastest_seconds, gemm_products

    shapes = [(tokens, hidden, hidden, 4), (tokens, hidden, ffn, 1), (tokens, ffn, hidden, 1)]
    flops = seconds_total = 0.0
    for m, k, n, count in shapes:
        a, b = torch.randn(m, k).to(device, dtype), torch.randn(k, n).to(device, dtype)
        products = gemm_products(a, b)
        best = fastest_seconds(products, device, seconds / len(shapes) / len(products))
        flops += count * 2.0 * m * k * n
        seconds_total += count * best
    return flops / seconds_total


def m3_peak(seconds: float = 1.5, hidden: int = 0, ffn: int = 0, tokens: int = 0) -> dict:
    """Measured GEMM peak FLOP/s in fp32 and bf16 on the benchmark device (+ data-sheet peak on CUDA),
    and, given the encoder's sizes, the rate of its own GEMM shapes (:func:`shape_gemm_rate`)."""
    import torch

    from benchmarks.device import bench_device, measure_matmul_peak, spec_peak_flops

    device = bench_device()
    out = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "fp32": measure_matmul_peak(device, torch.float32, seconds=seconds),
        "bf16": measure_matmul_peak(device, torch.bfloat16, seconds=seconds),
        "spec_bf16": spec_peak_flops(device),
    }
    if hidden:
        for kind, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            out[f"shape_{kind}"] = shape_gemm_rate(device, dtype, tokens, hidden, ffn)
    return out


def m3_profile(overrides: list[str], profile_step: int = 2) -> dict:
    """One training run (:func:`benchmarks.train.fit`) with ``torch.profiler`` around step ``profile_step``:
    time per category."""
    import lightning as L
    import torch

    from benchmarks.train import fit

    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    prof = torch.profiler.profile(activities=activities, record_shapes=True, with_flops=True)
    wall: list[float] = []

    class Window(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == profile_step:
                prof.start()
                wall.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == profile_step:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                wall.append(time.perf_counter())
                prof.stop()

    fit(overrides, Window())
    return {"profiled_step_s": wall[1] - wall[0], **categorize(prof)}


def _points_variants(points, spec: ModelSpec, folder: str, precision: str) -> dict[str, Variant]:
    """The GPU mode's runs: per (passage length, batch) point, group 8, gradient cache, auto sub-batches."""
    shape = EncoderShape(spec.hidden_size, spec.intermediate_size, spec.num_layers, spec.hidden_size)
    out = {}
    for length, batch in points:
        data = str(train_jsonl(2 * batch, query_tokens=QUERY_LEN + 16, passage_tokens=length + 64,
                               n_neg=POINT_GROUP - 1, seed=11))  # fmt: skip
        o = m3_overrides(folder, data, stage="unified_self_distill", batch_size=batch, group_size=POINT_GROUP,
                         query_max_len=QUERY_LEN, passage_max_len=length, steps=3, sub_batch_mode="gradcache",
                         sub_batch_size="auto", precision=precision)  # fmt: skip
        flops = step_flops(shape, [QUERY_LEN] * batch, [length] * (batch * POINT_GROUP))["total"]
        out[f"len {length} B={batch}"] = Variant(
            precision, o, flops, batch * (QUERY_LEN + POINT_GROUP * length)
        )
    return out


def run(
    quick: bool = False,
    runs: int | None = None,
    precisions: list[str] | None = None,
    profile: bool = True,
    model: str = "mid",
    compare_dropout: bool = False,
    points: list[tuple[int, int]] | None = None,
) -> dict:
    """Alternate peak measurements and training runs; MFU table + ``bench_results/mfu.json``.

    ``compare_dropout``: also run every precision with PyTorch's own dropout (``model.net.fast_cpu_dropout=
    false``) in the same alternation, and report the step-time ratio of the two. ``points``: the GPU mode,
    one run per (passage length, batch) instead of the workload (first precision only, no profile, one
    run per point by default); writes ``bench_results/gpu.json``.
    """
    from benchmarks.device import bench_device

    runs = runs or (1 if quick or points else 3)
    device = bench_device()
    # CPU default: fp32 only (bf16-mixed on CPU is slower at this size, see README; --precisions adds it)
    precisions = precisions or (["bf16-mixed"] if device.type == "cuda" else ["32-true"])
    spec = QUICK_SPEC if quick and not points else SPECS[model]
    get_tokenizer()
    folder = str(model_dir(spec))
    if points:
        variants, sizes = _points_variants(points, spec, folder, precisions[0]), {}
    else:
        variants, sizes = _workload_variants(spec, folder, model, precisions, quick, compare_dropout)
    results = _alternate(variants, sizes, runs, f"{model}{', points' if points else ''}")
    summary = _summary(results, variants, spec, points)
    if profile and not points:
        for prec in precisions[:1]:  # the first precision (fp32 on CPU): the MFU question
            summary[f"profile {prec}"] = _profile(folder, model, prec)
    dropout = precisions if compare_dropout and not points else []
    for prec in dropout:
        summary[f"{prec} dropout speed-up"] = _dropout_speedup(
            results[f"{prec} {TORCH_DROPOUT}"], results[prec]
        )
    what = (
        "paper length/batch points, G=8, gradient cache"
        if points
        else f"{workload_flops(spec)['total'] / 1e9:.0f} GFLOP/step"
    )
    table = f"\n### mfu ({model}: {spec.num_layers} layers, hidden {spec.hidden_size}; {what}; {describe(device)})\n"
    print(table + _table(summary, variants, precisions, dropout))
    payload = {
        "benchmark": "gpu" if points else "mfu", "quick": quick, "model": model, "model_spec": spec.__dict__,
        "points": [list(p) for p in points or []], "env": H.environment(False), "summary": summary, "runs": results,
    }  # fmt: skip
    H.save_json("gpu" if points else "mfu", payload)
    return payload


def _workload_variants(
    spec: ModelSpec, folder: str, model: str, precisions: list[str], quick: bool, compare_dropout: bool
) -> tuple[dict[str, Variant], dict]:
    """The workload's training run per precision (and with PyTorch's dropout), and the peak run's sizes."""
    data, steps, flops = str(train_jsonl(64)), 1 if quick else 2, workload_flops(spec)["total"]
    sizes = dict(hidden=spec.hidden_size, ffn=spec.intermediate_size, tokens=BATCH * GROUP * PASSAGE_LEN)
    variants: dict[str, Variant] = {}
    for prec in precisions:
        o = m3_overrides(folder, data, stage="unified_self_distill", steps=1 + steps, precision=prec)
        o += EXTRA_OVERRIDES.get(model, [])
        variants[prec] = Variant(prec, o, flops, WORKLOAD_TOKENS)
        if compare_dropout:
            variants[f"{prec} {TORCH_DROPOUT}"] = Variant(
                prec, [*o, TORCH_DROPOUT_OVERRIDE], flops, WORKLOAD_TOKENS
            )
    return variants, sizes


def _alternate(
    variants: dict[str, Variant], sizes: dict, runs: int, label: str
) -> dict[str, list[H.RunResult]]:
    """``runs`` rounds of the GEMM peak and every variant's training run, alternating."""
    peak_cmd = H.m3_command("benchmarks.mfu:m3_peak", **sizes)
    sides = {"peak": lambda r: H.run_subprocess(peak_cmd, timeout_s=180)}
    for name, v in variants.items():
        sides[name] = lambda r, o=v.overrides: H.run_subprocess(
            H.m3_command("benchmarks.train:m3_train", overrides=o), timeout_s=900
        )
    print(f"  mfu ({label})", flush=True)
    return H.alternate(sides, dict.fromkeys(sides, runs))


def _summary(results: dict, variants: dict[str, Variant], spec: ModelSpec, points: list | None) -> dict:
    """The measured peaks, the workload's FLOPs and one :func:`_mfu_entry` per variant."""
    peaks = [r.result for r in results["peak"] if r.ok]
    spec_peak = next((p["spec_bf16"] for p in peaks if p.get("spec_bf16")), None)
    summary: dict = {
        "peak": {k: H.summarize([p[k] for p in peaks]) for k in ("fp32", "bf16")},
        "shape_gemm": {k: H.summarize([p.get(f"shape_{k}") for p in peaks]) for k in ("fp32", "bf16")},
        "spec_peak_bf16": spec_peak,
    }
    if not points:
        summary["flops_per_step"] = workload_flops(spec)
    for name, v in variants.items():
        summary[name] = _mfu_entry(results[name], v, summary["peak"], spec_peak)
    return summary


def _profile(folder: str, model: str, precision: str) -> dict:
    """One profiled training run of the workload (:func:`m3_profile`), or its failure."""
    data = str(train_jsonl(64))
    o = m3_overrides(folder, data, stage="unified_self_distill", steps=3, precision=precision)
    o += EXTRA_OVERRIDES.get(model, [])
    res = H.run_subprocess(H.m3_command("benchmarks.mfu:m3_profile", overrides=o), timeout_s=900)
    return res.result if res.ok else {"failure": res.status}


def _table(summary: dict, variants: dict[str, Variant], precisions: list[str], dropout: list[str]) -> str:
    """The MFU table, then the dropout speed-ups and the profile shares."""
    rows = []
    for name in variants:
        entry = summary[name]
        kind = entry["peak_kind"]
        rows.append([
            name, H.fmt_range(entry["step_s"], 2), H.fmt_range(entry["tokens_per_s"], 0),
            H.fmt_range(entry["achieved_flops"], 1, 1e-9), f"{kind} " + H.fmt_range(summary["peak"][kind], 1, 1e-9),
            H.fmt_range(summary["shape_gemm"][kind], 1, 1e-9), _percent(entry["mfu_vs_measured_peak"]),
            _percent(entry.get("mfu_vs_spec_peak")),
            H.fmt_range(entry["peak_mb"], 0), "; ".join(entry["failures"]),
        ])  # fmt: skip
    table = H.format_table(
        ["run", "s/step", "tokens/s", "achieved GFLOP/s", "measured peak GFLOP/s", "encoder-shape GEMM GFLOP/s",
         "MFU", "MFU vs data sheet", "peak MB", "failures"],
        rows,
    )  # fmt: skip
    for prec in dropout:
        table += (
            f"\n{prec}: step time with PyTorch dropout / with m3lit's CPU dropout, per round: "
            + H.fmt_range(summary[f"{prec} dropout speed-up"], 2)
            + "x"
        )
    for prec in precisions:
        prof = summary.get(f"profile {prec}", {})
        if "category_s" in prof:
            table += f"\nprofile {prec} (self CPU time of one step): {shares(prof)}"
    return table


def _percent(stats: dict | None) -> str:
    text = H.fmt_range(stats or {}, 1, 100)
    return text if text == "n/a" else text + " %"


def _mfu_entry(results: list[H.RunResult], v: Variant, peaks: dict, spec_peak: float | None) -> dict:
    """Step time, tokens/s, achieved FLOP/s and MFU (vs the measured GEMM peak of the step's matmul precision,
    and on CUDA in bf16 vs the data sheet) over the ok runs of one variant."""
    ok = [r for r in results if r.ok]
    times = [t for r in ok for t in r.result["step_times"]]
    kind = "bf16" if v.precision.startswith("bf16") else "fp32"
    peak_med = peaks[kind]["median"]
    entry = {
        **step_stats(results), **H.peak_memory(results), "flops_per_step": v.flops, "peak_kind": kind,
        "achieved_flops": H.summarize([v.flops / t for t in times]),
        "mfu_vs_measured_peak": H.summarize([v.flops / t / peak_med for t in times] if peak_med else []),
        "token_count_mismatch": [n for r in ok for n in r.result["tokens_per_step"] if n != v.tokens],
    }  # fmt: skip
    if spec_peak and kind == "bf16":
        entry["mfu_vs_spec_peak"] = H.summarize([v.flops / t / spec_peak for t in times])
    return entry


def _dropout_speedup(torch_runs: list[H.RunResult], fast_runs: list[H.RunResult]) -> dict:
    """Per alternation round: median step time with PyTorch dropout / median step time with m3lit's."""
    import statistics

    ratios = [
        statistics.median(t.result["step_times"]) / statistics.median(f.result["step_times"])
        for t, f in zip(torch_runs, fast_runs, strict=True)
        if t.ok and f.ok
    ]
    return H.summarize(ratios)


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--precisions",
        default=None,
        help="comma list of trainer precisions (CPU default: 32-true; CUDA: bf16-mixed)",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler breakdown run")
    parser.add_argument(
        "--model", choices=sorted(SPECS), default="mid", help="encoder shape (e5-small: make train's)"
    )
    parser.add_argument(
        "--points",
        type=_points,
        default=None,
        help="GPU mode: length:batch pairs, e.g. 512:48,2048:20,8192:8",
    )
    parser.add_argument(
        "--compare-dropout",
        action="store_true",
        help="also run with PyTorch's dropout (model.net.fast_cpu_dropout=false), alternating, and print the ratio",
    )
    args = parser.parse_args(argv)
    precisions = args.precisions.split(",") if args.precisions else None
    run(args.quick, args.runs, precisions, not args.no_profile, args.model, args.compare_dropout, args.points)


def _points(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in (item.split(":") for item in text.split(",") if item)]


if __name__ == "__main__":
    main()
