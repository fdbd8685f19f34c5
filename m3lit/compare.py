"""Is one row of a results table better than another, or is the gap noise? A paired significance test per cell.

Run::

    python -m m3lit.compare run=RUN a=all b=bm25                       # every task of a suite run
    python -m m3lit.compare run=RUN a=all b=bm25 task=MIRACL-like metric=recall@100
    python -m m3lit.compare run=RUN a=all b=multilingual-e5-small/dense  # against the suite's reference row
    python -m m3lit.compare run=RUN_1 a=all b_run=RUN_2 b=all            # the same row of two runs

``run`` is any folder with ``results.json`` and ``runs/``: an ``m3lit.evaluate`` output_dir or a training
run. The per-query values come from the TREC files of the rows against the qrels the evaluation recorded
(the dataset must still hash as recorded), and each cell gets a two-sided paired randomisation test
(:mod:`m3lit.retrieval.report.significance`); the ``Avg`` row tests the difference of the table's averages. The
table is printed as markdown (x100, differences to two decimals) and, with ``output=FILE``, written as JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from m3lit.files.errors import PathError, UsageError, did_you_mean, run_command
from m3lit.files.options import command_help, parse_key_values

__all__ = ["OPTIONS", "format_comparison", "main"]

OPTIONS: dict[str, Any] = {
    "run": None,  # folder with results.json and runs/ (m3lit.evaluate output_dir or a training run); required
    "a": "all",  # row A: a mode of the evaluated model, or <label>/<mode> for a suite's reference row
    "b": "bm25",  # row B, the same way
    "b_run": None,  # folder of row B when it is another evaluation of the same datasets; null: run
    "task": None,  # a suite task (e.g. MIRACL-like), or [t1,t2]; null: every task
    "metric": None,  # e.g. ndcg@10; null: each task's headline metric (its table's first)
    "resamples": 10000,  # random sign vectors of the randomisation test
    "seed": 0,  # seed of the sign draws
    "output": None,  # write the comparison here as JSON; null: print only
}


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point (``python -m m3lit.compare`` / ``m3lit-compare``); a user error prints one
    ``error:`` line and raises ``SystemExit`` (:mod:`m3lit.files.errors`)."""
    return run_command(_run, argv, help=lambda: command_help(__name__, OPTIONS))


def _run(args: list[str]) -> dict:
    options = parse_key_values(args, OPTIONS, "compare", required=("run",))
    for key in ("run", "b_run"):
        if options[key] is not None and not (Path(options[key]) / "results.json").is_file():
            raise PathError(key, options[key], "no results.json in this folder")
    from m3lit.retrieval.modes import MODES

    for key in ("a", "b"):  # a row is a mode, or <reference label>/<mode>
        mode = str(options[key]).rpartition("/")[2]
        if mode not in MODES:
            raise UsageError(
                f"{key}={options[key]}: unknown mode {mode!r}{did_you_mean(mode, MODES)}; choose from {list(MODES)}"
            )
    task = options["task"]
    tasks = None if task is None else [t.strip() for t in task.strip("[]").split(",") if t.strip()]
    from m3lit.retrieval.report.significance import compare_runs

    if options["resamples"] < 1:
        raise UsageError(f"resamples={options['resamples']}: must be >= 1")
    passed = {key: options[key] for key in ("b_run", "metric", "resamples", "seed")}
    result = compare_runs(options["run"], options["a"], options["b"], tasks=tasks, **passed)
    b_label = options["b"] if options["b_run"] is None else f"{options['b']} ({options['b_run']})"
    print(format_comparison(result, options["a"], b_label, options["resamples"]))
    payload = {group: [asdict(c) for c in rows] for group, rows in result.items()}
    if options["output"]:
        Path(options["output"]).write_text(
            json.dumps({"options": options, "comparison": payload}, indent=1) + "\n"
        )
    return payload


def format_comparison(result: dict, a: str, b: str, resamples: int) -> str:
    """Markdown: a table per group, a row per dataset and the average (values x100)."""
    from m3lit.retrieval.report.significance import format_p

    blocks = []
    for group, rows in result.items():
        lines = [
            f"### {group}: {rows[0].metric} (x100), A = {a}, B = {b}",
            "",
            "| Dataset | A | B | A - B | p | queries |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for c in rows:
            name = f"**{c.name}**" if c.name == "Avg" else c.name
            lines.append(
                f"| {name} | {100 * c.mean_a:.1f} | {100 * c.mean_b:.1f} | {100 * c.difference:+.2f} "
                f"| {format_p(c.p_value)} | {c.num_queries} |"
            )
        blocks.append("\n".join(lines))
    note = f"p: two-sided paired randomisation test, {resamples} sign flips (m3lit.retrieval.report.significance)"
    return "\n\n".join(blocks) + "\n\n" + note


if __name__ == "__main__":
    main()
