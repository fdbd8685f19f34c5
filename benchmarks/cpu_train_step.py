"""Padding-free against padded training steps on `make train`'s own stage-2 batches (real model, real data).

    M3LIT_CACHE=... python -m benchmarks.padding_free [--quick] [--runs N] [--steps N]

The workload is `make train`'s (``experiment=bible_compact``: multilingual-e5-small with its embedding matrix
frozen, the compact Bible benchmark's mined stage-2 lines, 16 queries x 4 passages per step, unified +
self-distillation, attention and hidden dropout on) with the stage switch left out, so every step is a stage-2
step. Two sides, alternating, each a fresh process (:func:`benchmarks.train.m3_train`):

* ``padded``: ``model.net.padding_free=false``, every layer computes the batch's (B, L) rows, padding included;
* ``padding-free``: the default, only attention sees the padded layout (:mod:`m3lit.model.packing`).

Both read the same batches (same seed, same sampler); their dropout draws differ (module docstring of
:mod:`m3lit.model.packing`), so their losses agree only in distribution. Reported per side: the median step
time, real tokens/s, the share of the batches' token rows that are padding, and peak RSS; the speed ratio per
alternated pair. Writes ``bench_results/padding_free.json``. Build the benchmark and mine first (``make train``
once), or the first run pays for it.
"""

from __future__ import annotations

import tempfile

from benchmarks import harness as H
from benchmarks.train import step_stats
from benchmarks.workload import cache_root

__all__ = ["SIDES", "overrides", "run", "main"]

#: Side name -> the value of ``model.net.padding_free``.
SIDES = {"padded": False, "padding-free": True}


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
    """Alternate the two sides ``runs`` times; print the table; save ``bench_results/padding_free.json``."""
    runs = runs or (1 if quick else 3)
    steps = steps or (2 if quick else 6)
    warmup = 1
    configs = {name: overrides(flag, warmup + steps) for name, flag in SIDES.items()}
    sides = {
        name: lambda r, o=config: H.run_subprocess(
            H.m3_command("benchmarks.train:m3_train", overrides=o, warmup_steps=warmup), timeout_s=1800
        )
        for name, config in configs.items()
    }
    print("  padding_free (make train's stage-2 steps)", flush=True)
    results = H.alternate(sides, dict.fromkeys(sides, runs))
    summary = {name: {**step_stats(res), **H.peak_memory(res)} for name, res in results.items()}
    ratio = H.pair_ratios(
        summary["padded"]["run_median_step_s"], summary["padding-free"]["run_median_step_s"]
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
        ])  # fmt: skip
    table = "\n### padding_free (make train's stage-2 steps; s/step, real tokens/s, peak RSS MB)\n"
    print(table + H.format_table(["side", "s/step", "tokens/s", "padding rows", "peak RSS MB"], rows))
    print(f"speed-up padded / padding-free per alternated pair: {H.fmt_range(ratio)}")
    payload = {"benchmark": "padding_free", "quick": quick, "steps": steps, "env": H.environment(False),
               "summary": summary, "speedup": ratio, "runs": results}  # fmt: skip
    H.save_json("padding_free", payload)
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 6, --quick 2)")
    args = parser.parse_args(argv)
    run(args.quick, args.runs, args.steps)


if __name__ == "__main__":
    main()
