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
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

__all__ = ["MODE_NAMES", "write_reports", "markdown_tables", "is_multi_dataset"]

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


def _metric_label(name: str) -> str:
    kind, _, k = name.partition("@")
    return f"{_METRIC_NAMES.get(kind, kind)}@{k}" if k else name


def _ordered(keys) -> list[str]:
    keys = list(dict.fromkeys(keys))
    return [m for m in MODE_NAMES if m in keys] + [m for m in keys if m not in MODE_NAMES]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _averages(results: Mapping, modes: list[str], metric: str) -> dict[str, float | None]:
    out = {}
    for mode in modes:
        values = [results[d].get(mode, {}).get(metric) for d in results]
        out[mode] = None if any(v is None for v in values) else sum(values) / len(values)
    return out


def markdown_tables(results: Mapping) -> str:
    """The markdown table(s) of ``results`` (see the module docstring)."""
    if not results:
        raise ValueError("write_reports: results are empty")
    lines: list[str] = []
    if not is_multi_dataset(results):
        modes = _ordered(results)
        metrics = list(dict.fromkeys(m for mode in modes for m in results[mode]))
        lines += ["| Mode | " + " | ".join(_metric_label(m) for m in metrics) + " |"]
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
        lines += [f"### {_metric_label(metric)} (x100)", ""]
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


def _plot(results: Mapping, path: Path) -> None:
    """Grouped bar chart: a panel per metric, the modes on the x axis, a bar per dataset (+ average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    multi = is_multi_dataset(results)
    per_dataset = dict(results) if multi else {"": results}
    modes = _ordered(m for per_mode in per_dataset.values() for m in per_mode)
    metrics = list(
        dict.fromkeys(m for per_mode in per_dataset.values() for row in per_mode.values() for m in row)
    )
    series = {
        name: {m: {k: per_mode.get(m, {}).get(k) for k in metrics} for m in modes}
        for name, per_mode in per_dataset.items()
    }
    if multi and len(per_dataset) > 1:
        series["average"] = {m: {k: _averages(per_dataset, [m], k)[m] for k in metrics} for m in modes}
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(max(6, 1.2 * len(modes)) * len(metrics) / 1.5, 4), squeeze=False
    )
    x = np.arange(len(modes))
    width = 0.8 / len(series)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, (name, values) in enumerate(series.items()):
            heights = [100 * (values[m][metric] or 0.0) for m in modes]
            bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=name or None)
            for bar, m in zip(bars, modes, strict=True):
                if values[m][metric] is None:
                    bar.set_hatch("//")
                    bar.set_alpha(0.2)
        ax.set_xticks(x, [MODE_NAMES.get(m, m) for m in modes], rotation=30, ha="right")
        ax.set_title(_metric_label(metric))
        ax.set_ylabel("score x100")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    if multi:
        axes[0][-1].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(results: Mapping, output_dir: str | Path, settings: Mapping | None = None) -> str:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``output_dir``; return the markdown.

    Args:
        results: ``{mode: {metric: value}}`` or ``{dataset: {mode: {metric: value}}}``, values in [0, 1].
        output_dir: created if missing.
        settings: what made the table (:func:`m3lit.retrieval.settings.evaluation_settings`); None = unknown.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_tables(results)
    payload = {"settings": None if settings is None else dict(settings), "results": results}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(table, encoding="utf-8")
    _plot(results, out / "results.png")
    return table
