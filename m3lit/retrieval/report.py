"""Evaluation reports: ``results.json``, ``results.md`` (tables like the paper's) and ``results.png``.

``results`` is either one dataset, ``{mode: {metric: value}}``, or several, ``{dataset: {mode: {metric:
value}}}``. Values are in [0, 1] in the JSON and x100 with one decimal in the tables, as in the paper.
``results.json`` is ``{"settings": {...} or null, "results": results}``: the settings that made the table
(:mod:`m3lit.retrieval.settings`; read both back with :func:`m3lit.retrieval.settings.read_results`).

- One dataset: one table, a row per mode (Dense, Sparse, Multi-vec, Dense+Sparse, All, Dense+MCLS, BM25), a column
  per metric.
- Several datasets: one table per metric, a row per dataset plus their average, a column per mode (the
  paper's per-language tables, transposed). A mode missing from some dataset (e.g. a model without heads
  evaluated dense-only) shows "-" and gets no average.
- ``results.png``: the model beside its baselines per mode, BM25 as a line (:mod:`m3lit.retrieval.chart`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "MODE_NAMES",
    "as_table",
    "is_multi_dataset",
    "markdown_tables",
    "mean_of",
    "metric_label",
    "row_label",
    "split_row_label",
    "write_reports",
]

#: Display names of the modes: the paper's row labels.
MODE_NAMES = {
    "dense": "Dense",
    "sparse": "Sparse",
    "colbert": "Multi-vec",
    "dense+sparse": "Dense+Sparse",
    "all": "All",
    "dense+mcls": "Dense+MCLS",
    "bm25": "BM25",
}
_METRIC_NAMES = {"ndcg": "nDCG", "recall": "Recall", "mrr": "MRR"}


def is_multi_dataset(results: Mapping) -> bool:
    """True for ``{dataset: {mode: {metric: value}}}``, False for ``{mode: {metric: value}}``."""
    for per_mode in results.values():
        for value in per_mode.values():
            return isinstance(value, Mapping)
    return False


def row_label(system: str, mode: str) -> str:
    """A table row's label: the mode's display name for the main model (``system == ""``), else
    ``"<system> (<Mode>)"``, e.g. ``"multilingual-e5-small (Dense)"``. Inverse: :func:`split_row_label`."""
    name = MODE_NAMES.get(mode, mode)
    return f"{system} ({name})" if system else name


def split_row_label(label: str) -> tuple[str, str]:
    """``(system, mode)`` of a row label written by :func:`row_label` (system "" for the main model)."""
    modes = {name: mode for mode, name in MODE_NAMES.items()}
    if label in modes:
        return "", modes[label]
    system, sep, name = label.rpartition(" (")
    if sep and name.endswith(")") and name[:-1] in modes:
        return system, modes[name[:-1]]
    return "", label


def mean_of(per_member: Mapping[str, Mapping[str, float]], members, metric: str) -> float | None:
    """Mean of ``per_member[m][metric]`` over ``members`` (languages or datasets); None when one is missing."""
    values = [per_member.get(m, {}).get(metric) for m in members]
    return None if any(v is None for v in values) else sum(values) / len(values)


def as_table(results: Mapping) -> dict[str, dict]:
    """``results`` (one or several datasets) in a benchmark suite's shape, the chart's input
    (:mod:`m3lit.retrieval.chart`): one unnamed task whose "languages" are the datasets (``[""]`` for one).

    Returns:
        ``{"": {"metrics": [...], "languages": [...], "rows": {row label: {dataset: {metric: value}}}}}``.
    """
    per_dataset = dict(results) if is_multi_dataset(results) else {"": results}
    modes = _ordered(m for per_mode in per_dataset.values() for m in per_mode)
    rows = {
        row_label("", mode): {
            d: dict(per_mode[mode]) for d, per_mode in per_dataset.items() if mode in per_mode
        }
        for mode in modes
    }
    metrics = list(dict.fromkeys(k for per_lang in rows.values() for row in per_lang.values() for k in row))
    return {"": {"metrics": metrics, "languages": list(per_dataset), "rows": rows}}


def metric_label(name: str) -> str:
    """``ndcg@10`` -> ``nDCG@10``: the paper's spelling of a metric."""
    kind, _, k = name.partition("@")
    return f"{_METRIC_NAMES.get(kind, kind)}@{k}" if k else name


def _ordered(keys) -> list[str]:
    keys = list(dict.fromkeys(keys))
    return [m for m in MODE_NAMES if m in keys] + [m for m in keys if m not in MODE_NAMES]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _averages(results: Mapping, modes: list[str], metric: str) -> dict[str, float | None]:
    return {mode: mean_of({d: results[d].get(mode, {}) for d in results}, results, metric) for mode in modes}


def markdown_tables(results: Mapping) -> str:
    """The markdown table(s) of ``results`` (see the module docstring)."""
    if not results:
        raise ValueError("write_reports: results are empty")
    lines: list[str] = []
    if not is_multi_dataset(results):
        modes = _ordered(results)
        metrics = list(dict.fromkeys(m for mode in modes for m in results[mode]))
        lines += ["| Mode | " + " | ".join(metric_label(m) for m in metrics) + " |"]
        lines += ["|---|" + "---:|" * len(metrics)]
        for mode in modes:
            cells = [_fmt(results[mode].get(m)) for m in metrics]
            lines.append(f"| {MODE_NAMES.get(mode, mode)} | " + " | ".join(cells) + " |")
        return "Scores x100.\n\n" + "\n".join(lines) + "\n"
    modes = _ordered(m for per_mode in results.values() for m in per_mode)
    metrics = list(
        dict.fromkeys(m for per_mode in results.values() for row in per_mode.values() for m in row)
    )
    for metric in metrics:
        lines += [f"### {metric_label(metric)} (x100)", ""]
        lines += ["| Dataset | " + " | ".join(MODE_NAMES.get(m, m) for m in modes) + " |"]
        lines += ["|---|" + "---:|" * len(modes)]
        for name, per_mode in results.items():
            lines.append(
                f"| {name} | " + " | ".join(_fmt(per_mode.get(m, {}).get(metric)) for m in modes) + " |"
            )
        avg = _averages(results, modes, metric)
        lines.append("| **Average** | " + " | ".join(_fmt(avg[m]) for m in modes) + " |")
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
        settings: what made the table (:func:`m3lit.retrieval.settings.evaluation_settings`); None = unknown.
        label: the evaluated model's name in the chart's legend (e.g. "trained model (step 1000)").
        baselines: ``{legend label: results of the same shape}`` drawn beside it in the chart, e.g. the
            untrained model's; the JSON and the tables hold ``results`` only.
    """
    from m3lit.retrieval.chart import write_chart  # the chart reads this module's row labels

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_tables(results)
    payload = {"settings": None if settings is None else dict(settings), "results": results}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(table, encoding="utf-8")
    others = {name: as_table(r) for name, r in (baselines or {}).items()}
    write_chart(out / "results.png", as_table(results), others, label=label)
    return table
