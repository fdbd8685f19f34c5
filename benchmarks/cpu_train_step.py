"""`make train`'s stage-2 step (real model, real data) with and without issue 31's two CPU changes.

    M3LIT_CACHE=... python -m benchmarks.cpu_train_step [--quick] [--runs N] [--steps N]

The workload is `make train`'s (``experiment=bible_compact``: multilingual-e5-small with its embedding matrix
frozen, the compact Bible benchmark's mined stage-2 lines, 16 queries x 4 passages per step, unified +
self-distillation, attention and hidden dropout on) with the stage switch left out, so every step is a stage-2
step. Three sides, alternating, each a fresh process (:func:`benchmarks.train.m3_train`):

* ``padded, blas``: ``model.net.padding_free=false`` and ``M3LIT_ONEDNN_LINEAR=0``: every layer computes the
  batch's (B, L) rows, padding included, with torch's BLAS (the step before both changes);
* ``padding-free, blas``: only attention sees the padded layout (:mod:`m3lit.model.packing`);
* ``padding-free, onednn``: the default, linear layers through oneDNN too (:mod:`m3lit.model.onednn_linear`).

All read the same batches (same seed, same sampler); the padded side's dropout draws differ from the other two
(module docstring of :mod:`m3lit.model.packing`), so losses agree only in distribution. Reported per side: the
median step time, real tokens/s, the share of the batches' token rows that are padding, and peak RSS; the
speed-up of each side over ``padded, blas`` per alternated round. Writes ``bench_results/cpu_train_step.json``.
Build the benchmark and mine first (``make train`` once), or the first run pays for it.
"""

from __future__ import annotations

import tempfile

from benchmarks import harness as H
from benchmarks.train import step_stats
from benchmarks.workload import cache_root

__all__ = ["SIDES", "overrides", "run", "main"]

#: Side name -> (``model.net.padding_free``, ``M3LIT_ONEDNN_LINEAR``).
SIDES = {
    "padded, blas": (False, "0"),
    "padding-free, blas": (True, "0"),
    "padding-free, onednn": (True, "1"),
}
BASE = "padded, blas"


def overrides(padding_free: bool, steps: int) -> list[str]:
    """`make train`'s config, stage 2 from the first step, no evaluation, export, logger or checkpoints
    (:func:`benchmarks.train.fit` trains with its step timer as the only callback)."""
    return [
        "experiment=bible_compact", "~logger", "data.source=labelled",
        "model.stage=unified_self_distill", f"model.net.padding_free={padding_free}", f"trainer.max_steps={steps}",
        "evaluate.enabled=false", "export=false", "+trainer.enable_progress_bar=false",
        "+trainer.enable_checkpointing=false", "trainer.enable_model_summary=false",
        f"hydra.run.dir={tempfile.mkdtemp(prefix='m3lit-bench-', dir=cache_root())}",
    ]  # fmt: skip


def run(quick: bool = False, runs: int | None = None, steps: int | None = None) -> dict:
    """Alternate the three sides ``runs`` times; print the table; save ``bench_results/cpu_train_step.json``."""
    runs = runs or (1 if quick else 3)
    steps = steps or (2 if quick else 6)
    warmup = 1
    configs = {name: (overrides(flag, warmup + steps), {"M3LIT_ONEDNN_LINEAR": onednn})
               for name, (flag, onednn) in SIDES.items()}  # fmt: skip
    sides = {
        name: lambda r, o=config, e=env: H.run_subprocess(
            H.m3_command("benchmarks.train:m3_train", overrides=o, warmup_steps=warmup), timeout_s=1800, env=e
        )
        for name, (config, env) in configs.items()
    }
    print("  cpu_train_step (make train's stage-2 steps)", flush=True)
    results = H.alternate(sides, dict.fromkeys(sides, runs))
    summary = {name: {**step_stats(res), **H.peak_memory(res)} for name, res in results.items()}
    for name in sides:
        summary[name]["speedup"] = H.pair_ratios(
            summary[BASE]["run_median_step_s"], summary[name]["run_median_step_s"]
        )
    rows = []
    for name, res in results.items():
        stats = summary[name]
        real = sum(n for r in res if r.ok for n in r.result["tokens_per_step"])
        total = sum(n for r in res if r.ok for n in r.result["rows_per_step"])
        stats["padding_share"] = 1 - real / total if total else None
        rows.append([
            name, H.fmt_range(stats["step_s"]), H.fmt_range(stats["tokens_per_s"], digits=0),
            "n/a" if not total else f"{stats['padding_share']:.1%}", H.fmt_range(stats["peak_mb"], digits=0),
            H.fmt_range(stats["speedup"]),
        ])  # fmt: skip
    table = "\n### cpu_train_step (make train's stage-2 steps; s/step, real tokens/s, peak RSS MB)\n"
    headers = ["side", "s/step", "tokens/s", "padding rows", "peak RSS MB", f"speed-up over {BASE}"]
    print(table + H.format_table(headers, rows))
    payload = {"benchmark": "cpu_train_step", "quick": quick, "steps": steps, "env": H.environment(False),
               "summary": summary, "runs": results}  # fmt: skip
    H.save_json("cpu_train_step", payload)
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 6, --quick 2)")
    args = parser.parse_args(argv)
    run(args.quick, args.runs, args.steps)


if __name__ == "__main__":
    main()
