"""Evaluation reports: ``results.json``, ``results.md`` (tables like the paper's) and ``results.png``.

``results`` is either one dataset, ``{mode: {metric: value}}``, or several, ``{dataset: {mode: {metric:
value}}}``. Values are in [0, 1] in the JSON and x100 with one decimal in the tables, as in the paper.
``results.json`` is ``{"settings": {...} or null, "results": results}``: the settings that made the table
(:mod:`m3lit.retrieval.report.provenance`; read both back with :func:`m3lit.retrieval.report.provenance.read_results`).

- One dataset: one table, a row per mode (Dense, Sparse, Multi-vec, Dense+Sparse, All, Dense+MCLS, BM25), a column
  per metric.
- Several datasets: one table per metric, a row per dataset plus their average, a column per mode (the
  paper's per-language tables, transposed). A mode missing from some dataset (e.g. a model without heads
  evaluated dense-only) shows "-" and gets no average.
- ``results.png``: the model beside its baselines per mode, BM25 as a line (:mod:`m3lit.retrieval.report.chart`).
- A benchmark suite (:func:`write_suite_reports`): per task and metric a row per method and a column per language
  plus the average, then the averages of every task, then the paired tests of the headline claims.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from m3lit.retrieval.report.chart import write_chart
from m3lit.retrieval.report.significance import headline_tests
from m3lit.retrieval.report.tables import (
    MODE_NAMES,
    as_table,
    fmt_score,
    fusion_note,
    is_multi_dataset,
    mean_of,
    metric_label,
    ordered_modes,
)

__all__ = [
    "averages",
    "averages_table",
    "markdown_tables",
    "suite_tables",
    "write_reports",
    "write_suite_reports",
]


def _averages(results: Mapping, modes: list[str], metric: str) -> dict[str, float | None]:
    return {mode: mean_of({d: results[d].get(mode, {}) for d in results}, results, metric) for mode in modes}


def markdown_tables(results: Mapping) -> str:
    """The markdown table(s) of ``results`` (see the module docstring)."""
    if not results:
        raise ValueError("write_reports: results are empty")
    lines: list[str] = []
    if not is_multi_dataset(results):
        modes = ordered_modes(results)
        metrics = list(dict.fromkeys(m for mode in modes for m in results[mode]))
        lines += ["| Mode | " + " | ".join(metric_label(m) for m in metrics) + " |"]
        lines += ["|---|" + "---:|" * len(metrics)]
        for mode in modes:
            cells = [fmt_score(results[mode].get(m)) for m in metrics]
            lines.append(f"| {MODE_NAMES.get(mode, mode)} | " + " | ".join(cells) + " |")
        return "Scores x100.\n\n" + "\n".join(lines) + "\n"
    modes = ordered_modes(m for per_mode in results.values() for m in per_mode)
    metrics = list(
        dict.fromkeys(m for per_mode in results.values() for row in per_mode.values() for m in row)
    )
    for metric in metrics:
        lines += [f"### {metric_label(metric)} (x100)", ""]
        lines += ["| Dataset | " + " | ".join(MODE_NAMES.get(m, m) for m in modes) + " |"]
        lines += ["|---|" + "---:|" * len(modes)]
        for name, per_mode in results.items():
            lines.append(
                f"| {name} | " + " | ".join(fmt_score(per_mode.get(m, {}).get(metric)) for m in modes) + " |"
            )
        avg = _averages(results, modes, metric)
        lines.append("| **Average** | " + " | ".join(fmt_score(avg[m]) for m in modes) + " |")
        lines.append("")
    return "\n".join(lines)


def write_reports(
    results: Mapping,
    output_dir: str | Path,
    settings: Mapping | None = None,
    *,
    label: str = "model",
    baselines: Mapping[str, Mapping] | None = None,
) -> str:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``output_dir``; return the markdown.

    Args:
        results: ``{mode: {metric: value}}`` or ``{dataset: {mode: {metric: value}}}``, values in [0, 1].
        output_dir: created if missing.
        settings: what made the table (:func:`m3lit.retrieval.report.provenance.evaluation_settings`); None = unknown.
        label: the evaluated model's name in the chart's legend (e.g. "trained model (step 1000)").
        baselines: ``{legend label: results of the same shape}`` drawn beside it in the chart, e.g. the
            untrained model's; the JSON and the tables hold ``results`` only.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_tables(results)
    payload = {"settings": None if settings is None else dict(settings), "results": results}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(table, encoding="utf-8")
    others = {name: as_table(r) for name, r in (baselines or {}).items()}
    write_chart(out / "results.png", as_table(results), others, label=label)
    return table


# ------------------------------------------------------------------------------- a benchmark suite's tables
def suite_tables(results: Mapping[str, Mapping]) -> str:
    """Markdown: per task and metric, a row per method and a column per language plus the average (x100)."""
    lines: list[str] = []
    for task, block in results.items():
        langs = block["languages"]
        for metric in block["metrics"]:
            lines += [f"### {task}: {metric} (x100)", ""]
            lines += ["| Method | " + " | ".join(langs) + " | Avg |", "|---|" + "---:|" * (len(langs) + 1)]
            for label, per_lang in block["rows"].items():
                cells = [fmt_score(per_lang.get(lang, {}).get(metric)) for lang in langs]
                lines.append(
                    f"| {label} | "
                    + " | ".join(cells)
                    + f" | {fmt_score(mean_of(per_lang, langs, metric))} |"
                )
            lines.append("")
        if block.get("fusion"):
            lines += [fusion_note(block["fusion"]), ""]
    return "\n".join(lines)


def averages_table(results: Mapping[str, Mapping]) -> str:
    """Markdown: one row per method, one column per (task, metric) holding the average over the task's
    languages (x100; ``-`` where a row was not evaluated on that task): the paper-style summary the docs quote."""
    means = averages(results)
    columns = [(task, m) for task, block in results.items() for m in block["metrics"]]
    labels = list(dict.fromkeys(label for task in results for label in results[task]["rows"]))
    head = [f"{task} {metric_label(m)} ({'/'.join(results[task]['languages'])})" for task, m in columns]
    lines = ["### Averages over the languages (x100)", ""]
    lines += ["| Method | " + " | ".join(head) + " |", "|---|" + "---:|" * len(columns)]
    for label in labels:
        cells = [fmt_score(means[task].get(label, {}).get(m)) for task, m in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def averages(results: Mapping[str, Mapping]) -> dict[str, dict[str, dict[str, float | None]]]:
    """``{task: {row: {metric: average over languages}}}``: the numbers the README quotes."""
    return {
        task: {
            label: {m: mean_of(per_lang, block["languages"], m) for m in block["metrics"]}
            for label, per_lang in block["rows"].items()
        }
        for task, block in results.items()
    }


def write_suite_reports(
    results: Mapping[str, Mapping],
    output_dir: str | Path,
    *,
    suite: str,
    settings: Mapping[str, Any],
    label: str = "model",
    baselines: Mapping[str, Mapping] | None = None,
) -> str:
    """Write ``results.json`` (with ``settings``), ``results.md`` and ``results.png``; return the markdown.

    ``label`` names the main model in the chart (:mod:`m3lit.retrieval.report.chart`), beside its reference rows
    and ``baselines`` (``{legend label: results of an earlier suite evaluation}``, e.g. the untrained model).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = suite_tables(results) + "\n" + averages_table(results)
    payload = {
        "settings": dict(settings),
        "results": {"suite": suite, "tasks": dict(results), "averages": averages(results)},
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if (out / "runs").is_dir():  # the TREC files of this evaluation: test its headline claims
        tests = headline_tests(out)
        table += "\n" + tests if tests else ""
    (out / "results.md").write_text(f"# {suite}\n\n{table}", encoding="utf-8")
    write_chart(out / "results.png", results, baselines, label=label, title=suite)
    return table
