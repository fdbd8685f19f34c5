"""Model FLOPs utilisation (MFU) of a training step on a mid-size encoder, and where the rest goes.

    python -m benchmarks.mfu [--quick] [--runs N] [--precisions 32-true,bf16-mixed] [--no-profile] [--compare-dropout]

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
"""

from __future__ import annotations

import time

from benchmarks import harness as H
from benchmarks.flops import EncoderShape, step_flops
from benchmarks.profiling import categorize, shares
from benchmarks.train import m3_overrides
from benchmarks.workload import MID_SIZE, TINY_250K, ModelSpec, get_tokenizer, model_dir, train_jsonl

__all__ = ["m3_peak", "m3_profile", "workload_flops", "run", "main"]

BATCH, GROUP, QUERY_LEN, PASSAGE_LEN = 8, 4, 64, 256
#: Row-name suffix of the ``--compare-dropout`` runs (PyTorch's ``bernoulli_`` dropout masks).
TORCH_DROPOUT = "torch dropout"
#: --quick (a smoke test) runs a 2-layer, hidden-128 encoder instead of the mid-size one.
QUICK_SPEC = ModelSpec(vocab_size=0, hidden_size=128, num_layers=2, num_heads=2, intermediate_size=256)
#: --model e5-small: the encoder shape of multilingual-e5-small (12 layers, hidden 384, FFN 1536), the real
#: model `make train` fine-tunes; the embedding matrix is frozen there (fix_word_embeddings), as here.
E5_SMALL_SHAPE = ModelSpec(vocab_size=0, hidden_size=384, num_layers=12, num_heads=12, intermediate_size=1536)
SPECS = {"mid": MID_SIZE, "tiny": TINY_250K, "e5-small": E5_SMALL_SHAPE}
EXTRA_OVERRIDES = {"e5-small": ["model.net.fix_word_embeddings=true"]}


def workload_flops(spec: ModelSpec) -> dict[str, float]:
    """Model FLOPs of one step of the MFU workload on ``spec`` (every text fills its max length)."""
    dc = spec.colbert_dim if spec.colbert_dim > 0 else spec.hidden_size
    shape = EncoderShape(spec.hidden_size, spec.intermediate_size, spec.num_layers, dc)
    return step_flops(shape, [QUERY_LEN] * BATCH, [PASSAGE_LEN] * (BATCH * GROUP))


def shape_gemm_rate(device, dtype, tokens: int, hidden: int, ffn: int, seconds: float = 1.0) -> float:
    """FLOP/s of the encoder's own forward GEMMs, (T x H) @ (H x H), (T x H) @ (H x F) and (T x F) @ (F x H)
    in their per-layer proportions (4 : 1 : 1), best repetition of each. Compared with the large-GEMM peak
    it says how much of the MFU gap is the GEMM shapes (K = H is small) rather than non-matmul time."""
    import torch

    from benchmarks.device import sync

    shapes = [(tokens, hidden, hidden, 4), (tokens, hidden, ffn, 1), (tokens, ffn, hidden, 1)]
    flops = seconds_total = 0.0
    for m, k, n, count in shapes:
        a, b = torch.randn(m, k).to(device, dtype), torch.randn(k, n).to(device, dtype)
        a @ b
        sync(device)
        best, deadline = float("inf"), time.perf_counter() + seconds / len(shapes)
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            a @ b
            sync(device)
            best = min(best, time.perf_counter() - start)
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
    """One training run with ``torch.profiler`` around step ``profile_step``: time per category."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from m3lit.config.compose import compose

    cfg = compose(overrides)
    L.seed_everything(cfg.seed, workers=True)
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

    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model)
    if getattr(datamodule, "tokenizer", None) is None:
        datamodule.tokenizer = module.model.tokenizer
    trainer = instantiate(cfg.trainer, callbacks=[Window()], logger=False)
    trainer.fit(module, datamodule=datamodule)
    return {"profiled_step_s": wall[1] - wall[0], **categorize(prof)}


def run(
    quick: bool = False,
    runs: int | None = None,
    precisions: list[str] | None = None,
    profile: bool = True,
    model: str = "mid",
    compare_dropout: bool = False,
) -> dict:
    """Alternate peak measurements and training runs per precision; MFU table + ``bench_results/mfu.json``.

    ``compare_dropout``: also run every precision with PyTorch's own dropout (``model.net.fast_cpu_dropout=
    false``) in the same alternation, and report the step-time ratio of the two.
    """
    from benchmarks.device import bench_device

    runs = runs or (1 if quick else 3)
    device = bench_device()
    # CPU default: fp32 only (bf16-mixed on CPU is slower at this size, see README; --precisions adds it)
    precisions = precisions or (["bf16-mixed"] if device.type == "cuda" else ["32-true"])
    spec = QUICK_SPEC if quick else SPECS[model]
    get_tokenizer()
    folder, data = str(model_dir(spec)), str(train_jsonl(64))
    steps = 1 if quick else 2
    flops = workload_flops(spec)
    sizes = dict(hidden=spec.hidden_size, ffn=spec.intermediate_size, tokens=BATCH * GROUP * PASSAGE_LEN)
    peak_cmd = H.m3_command("benchmarks.mfu:m3_peak", **sizes)
    sides = {"peak": lambda r: H.run_subprocess(peak_cmd, timeout_s=180)}
    variants = {}  # row name -> (precision, extra overrides)
    for prec in precisions:
        variants[prec] = (prec, [])
        if compare_dropout:
            variants[f"{prec} {TORCH_DROPOUT}"] = (prec, ["model.net.fast_cpu_dropout=false"])
    for name, (prec, extra) in variants.items():
        o = m3_overrides(folder, data, stage="unified_self_distill", steps=1 + steps, precision=prec) + extra
        o += EXTRA_OVERRIDES.get(model, [])
        sides[name] = lambda r, o=o: H.run_subprocess(
            H.m3_command("benchmarks.train:m3_train", overrides=o), timeout_s=900
        )
    print(f"  mfu ({model})", flush=True)
    results = H.alternate(sides, dict.fromkeys(sides, runs))
    peaks = [r.result for r in results["peak"] if r.ok]
    summary: dict = {
        "flops_per_step": flops,
        "peak": {k: H.summarize([p[k] for p in peaks]) for k in ("fp32", "bf16")},
        "shape_gemm": {k: H.summarize([p[f"shape_{k}"] for p in peaks]) for k in ("fp32", "bf16")},
    }
    rows = []
    for name, (prec, _) in variants.items():
        ok = [r for r in results[name] if r.ok]
        expected = BATCH * QUERY_LEN + BATCH * GROUP * PASSAGE_LEN
        bad = [t for r in ok for t in r.result["tokens_per_step"] if t != expected]
        times = [t for r in ok for t in r.result["step_times"]]
        kind = "bf16" if prec.startswith("bf16") else "fp32"
        peak_med = summary["peak"][kind]["median"]
        entry = {
            "step_s": H.summarize(times),
            "achieved_flops": H.summarize([flops["total"] / t for t in times]),
            "mfu_vs_measured_peak": H.summarize([flops["total"] / t / peak_med for t in times])
            if peak_med
            else H.summarize([]),
            "peak_kind": kind,
            "token_count_mismatch": bad,
            "failures": [r.status for r in results[name] if not r.ok],
        }
        spec_peak = next((p["spec_bf16"] for p in peaks if p.get("spec_bf16")), None)
        if spec_peak and kind == "bf16":
            entry["mfu_vs_spec_peak"] = H.summarize([flops["total"] / t / spec_peak for t in times])
        summary[name] = entry
        rows.append([
            name, H.fmt_range(entry["step_s"], 2), H.fmt_range(entry["achieved_flops"], 1, 1e-9),
            f"{kind} " + H.fmt_range(summary["peak"][kind], 1, 1e-9), H.fmt_range(summary["shape_gemm"][kind], 1, 1e-9),
            H.fmt_range(entry["mfu_vs_measured_peak"], 1, 100) + " %",
        ])  # fmt: skip
    if profile:
        for prec in precisions[:1]:  # the first precision (fp32 on CPU): the MFU question
            o = m3_overrides(folder, data, stage="unified_self_distill", steps=3, precision=prec)
            o += EXTRA_OVERRIDES.get(model, [])
            res = H.run_subprocess(H.m3_command("benchmarks.mfu:m3_profile", overrides=o), timeout_s=900)
            summary[f"profile {prec}"] = res.result if res.ok else {"failure": res.status}
    table = f"\n### mfu ({model}: {spec.num_layers} layers, hidden {spec.hidden_size}; {flops['total'] / 1e9:.0f} GFLOP/step)\n"
    table += H.format_table(
        [
            "precision",
            "s/step",
            "achieved GFLOP/s",
            "measured peak GFLOP/s",
            "encoder-shape GEMM GFLOP/s",
            "MFU",
        ],
        rows,
    )
    for prec in precisions if compare_dropout else []:
        speedup = _dropout_speedup(results[f"{prec} {TORCH_DROPOUT}"], results[prec])
        summary[f"{prec} dropout speed-up"] = speedup
        table += (
            f"\n{prec}: step time with PyTorch dropout / with m3lit's CPU dropout, per round: "
            + H.fmt_range(speedup, 2)
            + "x"
        )
    for prec in precisions:
        prof = summary.get(f"profile {prec}", {})
        if "category_s" in prof:
            table += f"\nprofile {prec} (self CPU time of one step): {shares(prof)}"
    print(table)
    payload = {
        "benchmark": "mfu",
        "quick": quick,
        "model": model,
        "model_spec": spec.__dict__,
        "env": H.environment(False),
        "summary": summary,
        "runs": results,
    }
    H.save_json("mfu", payload)
    return payload


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
        "--compare-dropout",
        action="store_true",
        help="also run with PyTorch's dropout (model.net.fast_cpu_dropout=false), alternating, and print the ratio",
    )
    args = parser.parse_args(argv)
    precisions = args.precisions.split(",") if args.precisions else None
    run(args.quick, args.runs, precisions, not args.no_profile, args.model, args.compare_dropout)


if __name__ == "__main__":
    main()
