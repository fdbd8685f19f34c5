"""Training step speed and peak memory: m3lit (dense; unified; unified + self-distillation) vs FlagEmbedding.

    python -m benchmarks.train [--quick] [--runs N] [--no-flag] [--steps K] [--model tiny|mid]

The workload of issue 6: the tiny XLM-R with the 250,002-token vocabulary (:mod:`benchmarks.workload`),
batch 8, group size 4 (1 positive + 3 negatives), query 64 / passage 256 tokens, temperature 0.02, the
same JSONL file for both trainers, no sub-batching, fp32 on CPU (bf16 autocast on CUDA).

* m3lit: the real training path: a config composed from ``configs/`` (``model=default`` on the workload
  folder, ``data=default`` on the JSONL), ``M3DataModule`` + ``M3LitModule`` + a Lightning ``Trainer``
  built from that config, with one extra callback that timestamps every step. Logging, checkpoints and
  evaluation are off (they are not part of a step).
* FlagEmbedding: ``python -m FlagEmbedding.finetune.embedder.encoder_only.m3 ... --use_cpu True`` with the
  same arguments (``benchmarks/flag_worker.py``), timed by a trainer callback.

Step time = time between the ends of consecutive optimizer steps (data loading, forward, backward,
clipping and the AdamW step included), after ``warmup`` steps. Peak RSS = the process's ``ru_maxrss``.
"""

from __future__ import annotations

import tempfile
import time

from benchmarks import harness as H
from benchmarks.workload import MID_SIZE, TINY_250K, ModelSpec, cache_root, model_dir, train_jsonl

__all__ = ["STAGES", "fit", "m3_train", "m3_overrides", "run", "main"]

#: m3lit stages measured (M3LitModule.stage); FlagEmbedding runs the last one.
STAGES = ("dense", "unified", "unified_self_distill")
MODELS = {"tiny": TINY_250K, "mid": MID_SIZE}


def m3_overrides(
    model_folder: str,
    data: str,
    *,
    stage: str,
    batch_size: int = 8,
    group_size: int = 4,
    query_max_len: int = 64,
    passage_max_len: int = 256,
    steps: int = 4,
    sub_batch_mode: str = "split",
    sub_batch_size: int = 0,
    gradient_checkpointing: bool = False,
    precision: str | None = None,
) -> list[str]:
    """Config overrides (``configs/train.yaml``) of one benchmark run; shared with :mod:`benchmarks.memory`."""
    from benchmarks.device import bench_device

    device = bench_device()
    sizes = "[" + ",".join([str(batch_size)] * 9) + "]"  # one batch size for every length bucket
    out = [
        "~experiment", "model=default", "data=default", "callbacks=none", "~logger",
        f"trainer={'gpu' if device.type == 'cuda' else 'cpu'}",
        f"model.net.name_or_path={model_folder}", f"model.stage={stage}", "model.optimizer.lr=1e-5",
        f"model.sub_batch_mode={sub_batch_mode}", f"model.net.gradient_checkpointing={gradient_checkpointing}",
        f"data.train_data={data}", f"data.train_group_size={group_size}",
        f"data.query_max_len={query_max_len}", f"data.passage_max_len={passage_max_len}",
        f"data.bucket_batch_sizes={sizes}", f"data.sub_batch_size={sub_batch_size}", "data.shuffle_ratio=0",
        f"trainer.max_steps={steps}", "trainer.enable_model_summary=false", "+trainer.enable_progress_bar=false",
        "+trainer.enable_checkpointing=false", "trainer.log_every_n_steps=1000",
        f"hydra.run.dir={tempfile.mkdtemp(prefix='m3lit-bench-', dir=cache_root())}",
    ]  # fmt: skip
    if precision or device.type == "cuda":
        out.append(f"trainer.precision={precision or 'bf16-mixed'}")
    return out


def fit(overrides: list[str], callback) -> None:
    """Compose the config, seed, build data module, module and trainer (with ``callback``, no logger) from it
    and train; the run's output folder is removed afterwards. A config with a ``corpus`` block (an
    experiment such as ``bible_compact``) is prepared first, as ``python -m m3lit.train`` does."""
    import shutil

    import lightning as L
    from hydra.utils import instantiate

    from m3lit.config.compose import compose
    from m3lit.config.corpus import prepare_corpus

    cfg = compose(overrides)
    prepare_corpus(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model)
    if getattr(datamodule, "tokenizer", None) is None:
        datamodule.tokenizer = module.model.tokenizer
    trainer = instantiate(cfg.trainer, callbacks=[callback], logger=False)
    try:
        trainer.fit(module, datamodule=datamodule)
    finally:
        shutil.rmtree(cfg.paths.output_dir, ignore_errors=True)


def m3_train(overrides: list[str], warmup_steps: int = 1) -> dict:
    """Train on the composed config (:func:`fit`); time every optimizer step."""
    import lightning as L
    import torch

    from benchmarks.device import sync

    marks: list[float] = []
    tokens: list[int] = []
    rows: list[int] = []  # token rows including padding

    class StepTimer(L.Callback):
        def on_train_start(self, trainer, pl_module):
            sync(pl_module.device)
            marks.append(time.perf_counter())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync(pl_module.device)
            marks.append(time.perf_counter())
            tokens.append(sum(int(s.attention_mask.sum()) for s in [*batch.queries, *batch.passages]))
            rows.append(sum(s.attention_mask.numel() for s in [*batch.queries, *batch.passages]))

    fit(overrides, StepTimer())
    times = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {
        "step_times": times[warmup_steps:],
        "warmup_times": times[:warmup_steps],
        "tokens_per_step": tokens[warmup_steps:],
        "rows_per_step": rows[warmup_steps:],
        "threads": torch.get_num_threads(),
    }


def run(
    quick: bool = False,
    runs: int | None = None,
    flag: bool = True,
    steps: int | None = None,
    flag_runs: int | None = None,
    flag_steps: int | None = None,
    model: str = "tiny",
) -> dict:
    """m3lit's three stages and FlagEmbedding's unified + self-distillation, alternating runs."""
    runs = runs or (1 if quick else 3)
    steps = steps or (2 if quick else 8)  # m3lit steps are short: several per run steady the median
    # FlagEmbedding's steps take 15-20 s: one run (start-up, 1 warm-up step, 3 timed steps) keeps `make bench`
    # within its time budget; the ratios pair each m3lit run with its median step.
    flag_runs = flag_runs or 1
    flag_steps = flag_steps or (1 if quick else 3)
    batch = 2 if quick else 8  # --quick is a smoke test: batch 2 on both sides
    spec: ModelSpec = MODELS[model]
    folder = str(model_dir(spec))
    data = str(train_jsonl(64))
    warmup = 1
    sides = {}
    for stage in STAGES:
        overrides = m3_overrides(folder, data, stage=stage, batch_size=batch, steps=warmup + steps)
        sides[f"m3lit {stage}"] = lambda r, o=overrides: H.run_subprocess(
            H.m3_command("benchmarks.train:m3_train", overrides=o, warmup_steps=warmup), timeout_s=900
        )
    out_dir = str(cache_root() / "flag-train-out")
    sides["flag unified_self_distill"] = lambda r: H.run_subprocess(
        H.flag_command("train", model_dir=folder, train_data=data, output_dir=f"{out_dir}-{r}", warmup_steps=warmup, steps=flag_steps, batch_size=batch),
        timeout_s=1200,
    )  # fmt: skip
    counts = {name: runs for name in sides}
    counts["flag unified_self_distill"] = flag_runs if flag else 0
    print(f"  train ({model})", flush=True)
    results = H.alternate(sides, counts)
    table, summary = summarize(
        results, flag_name="flag unified_self_distill", target_name="m3lit unified_self_distill"
    )
    print(table)
    payload = {
        "benchmark": "train", "quick": quick, "model": model, "model_spec": spec.__dict__, "env": H.environment(flag),
        "workload": {"batch_size": batch, "group_size": 4, "query_max_len": 64, "passage_max_len": 256, "temperature": 0.02},
        "summary": summary, "runs": results,
    }  # fmt: skip
    H.save_json("train" if model == "tiny" else f"train-{model}", payload)
    return payload


def step_stats(results: list[H.RunResult]) -> dict:
    """Pooled step times, tokens/s and peak RSS over the ok runs of one side."""
    times = [t for r in results if r.ok for t in r.result["step_times"]]
    per_run = [
        sorted(r.result["step_times"])[len(r.result["step_times"]) // 2]
        for r in results
        if r.ok and r.result["step_times"]
    ]
    tokens = [
        n / t
        for r in results
        if r.ok
        for n, t in zip(r.result["tokens_per_step"], r.result["step_times"], strict=False)
    ]
    return {
        "step_s": H.summarize(times),
        "run_median_step_s": per_run,
        "tokens_per_s": H.summarize(tokens),
        "peak_rss_mb": H.summarize([r.result["peak_rss_mb"] for r in results if r.ok]),
        "failures": [r.status for r in results if not r.ok],
    }


def summarize(results: dict[str, list[H.RunResult]], flag_name: str, target_name: str) -> tuple[str, dict]:
    summary = {name: step_stats(res) for name, res in results.items()}
    flag = summary.get(flag_name, {})
    rows = []
    for name, s in summary.items():
        speed = mem = ""
        if flag and flag.get("run_median_step_s") and name != flag_name and s["run_median_step_s"]:
            s["speedup_vs_flag"] = H.pair_ratios(flag["run_median_step_s"], s["run_median_step_s"])
            rss_m3 = [r.result["peak_rss_mb"] for r in results[name] if r.ok]
            rss_fl = [r.result["peak_rss_mb"] for r in results[flag_name] if r.ok]
            s["memory_ratio_vs_flag"] = H.pair_ratios(rss_m3, rss_fl)
            speed, mem = H.fmt_range(s["speedup_vs_flag"], 1) + "x", H.fmt_range(s["memory_ratio_vs_flag"], 3)
        rows.append(
            [
                name,
                H.fmt_range(s["step_s"], 3),
                H.fmt_range(s["tokens_per_s"], 0),
                H.fmt_range(s["peak_rss_mb"], 0),
                speed,
                mem,
            ]
        )
    headers = [
        "train step (median (min-max))",
        "s/step",
        "tokens/s",
        "peak RSS MB",
        "speed-up vs Flag",
        "RSS m3lit/Flag",
    ]
    fails = "".join(f"\nFAILED {n}: {f}" for n, s in summary.items() for f in s["failures"])
    return "\n### train\n" + H.format_table(headers, rows) + fails, summary


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=None, help="measured m3lit steps per run (after 1 warm-up)"
    )
    parser.add_argument("--flag-runs", type=int, default=None, help="FlagEmbedding runs (default 1; slow)")
    parser.add_argument(
        "--flag-steps", type=int, default=None, help="measured FlagEmbedding steps per run (default 3)"
    )
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny", help="tiny (the workload) or mid")
    args = parser.parse_args(argv)
    run(args.quick, args.runs, H.want_flag(args), args.steps, args.flag_runs, args.flag_steps, args.model)


if __name__ == "__main__":
    main()
