"""The results chart (``results.png``): the model beside its baselines in every mode, BM25 as a line.

One drawing serves every evaluation m3lit writes: one dataset, several datasets, a benchmark suite (tasks x
languages); the baselines are the untrained model (``<run dir>/baseline/``) and any released reference model
(a suite's ``"<label> (Dense)"`` rows, :func:`m3lit.retrieval.report.tables.row_label`). Every input is a table in
the suite's shape (:func:`m3lit.retrieval.report.tables.as_table` gives it for one or several datasets)::

    {task: {"metrics": [primary, ...], "languages": [...], "rows": {row label: {language: {metric: value}}}}}

Small multiples: a panel per task and language while they are few (no task with more than
:data:`MAX_LANGUAGES` languages, at most :data:`MAX_PANELS` panels), plus the task's mean over its languages;
otherwise a panel per task with that mean. A panel shows the task's primary (first) metric; a lone panel is
split into one per metric. In a panel the x axis holds the modes (Dense, Sparse, Multi-vec, Dense+Sparse, All,
Dense+MCLS) and each mode holds a bar per system, baselines first (grey tones) and the model last (blue),
each with its value x100; a system not evaluated in a mode has no bar there. BM25 is a dashed red line.

Drawn on a bare :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot, matplotlib's default style): it
runs headless, leaves the caller's matplotlib state alone, and the same numbers give the same PNG bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from m3lit.retrieval.report.tables import MODE_NAMES, mean_of, metric_label, split_row_label

__all__ = ["MAX_LANGUAGES", "MAX_PANELS", "Panel", "chart_panels", "results_figure", "write_chart"]

#: Per-language panels only while no task has more languages than this ...
MAX_LANGUAGES = 4
#: ... and the figure has at most this many panels; otherwise a panel per task (mean over languages).
MAX_PANELS = 12
_MODEL_COLOR = "#2f6fb0"
_BASELINE_COLORS = ("#a9b4be", "#e0a458", "#8c6bb1", "#5f6b75")
_BM25_COLOR = "#c0392b"
_PANEL_SIZE = (5.2, 3.6)  # inches per panel


@dataclass(frozen=True)
class Panel:
    """One panel of the chart.

    Attributes:
        task: the task (suite) or "" (one or several datasets).
        language: the language or dataset shown, or None for the mean over the task's languages.
        metric: e.g. ``ndcg@10``.
        title: the panel's title.
        bars: ``{system: {mode: value x100}}``, systems in drawing order, modes a system was evaluated in.
        bm25: the BM25 value x100, or None without a BM25 row.
    """

    task: str
    language: str | None
    metric: str
    title: str
    bars: dict[str, dict[str, float]]
    bm25: float | None


def _systems(model: Mapping, baselines: Mapping[str, Mapping], label: str) -> tuple[dict, dict]:
    """``({system: {task: {mode: {language: {metric: value}}}}}, {task: BM25 row})`` from the tables.

    Systems in drawing order: each baseline's own rows, the reference models' rows (from any table), the
    model's own rows. BM25 is the model's (the baselines' when the model has none).
    """
    if label in baselines:
        raise ValueError(f"chart: the model's label {label!r} is also a baseline's")
    systems: dict[str, dict] = {}
    bm25: dict[str, dict] = {}

    def add(tables: list[tuple[str, Mapping]], main: bool) -> None:
        for name, table in tables:
            for task, block in table.items():
                for row, per_lang in block["rows"].items():
                    system, mode = split_row_label(row)
                    if mode == "bm25":
                        bm25.setdefault(task, per_lang)
                    elif (system == "") == main:
                        key = name if main else f"{system} (reference)"
                        systems.setdefault(key, {}).setdefault(task, {}).setdefault(mode, per_lang)

    add([(label, model)], main=False)  # BM25 from the model first
    add(list(baselines.items()), main=False)
    references, systems = systems, {}
    add(list(baselines.items()), main=True)
    systems.update(references)
    add([(label, model)], main=True)
    return systems, bm25


def _layout(tasks: Mapping[str, Mapping]) -> list[list[tuple[str, str | None, str]]]:
    """Rows of panels, each ``(task, language or None for the mean, metric)`` (see the module docstring)."""
    counts = [len(b["languages"]) + (len(b["languages"]) > 1) for b in tasks.values()]
    detail = all(len(b["languages"]) <= MAX_LANGUAGES for b in tasks.values()) and sum(counts) <= MAX_PANELS
    rows = []
    for task, block in tasks.items():
        langs = list(block["languages"])
        members = [*langs, None] if detail else [None]  # None: the mean over the languages
        members = langs if len(langs) == 1 else members
        rows.append([(task, lang, block["metrics"][0]) for lang in members])
    if sum(len(r) for r in rows) == 1:
        task, lang, _ = rows[0][0]
        rows = [[(task, lang, metric) for metric in tasks[task]["metrics"]]]
    return rows


def _value(per_lang: Mapping | None, langs: list[str], lang: str | None, metric: str) -> float | None:
    if per_lang is None:
        return None
    value = mean_of(per_lang, langs, metric) if lang is None else per_lang.get(lang, {}).get(metric)
    return None if value is None else 100 * value


def _title(task: str, lang: str | None, metric: str, langs: list[str]) -> str:
    """E.g. "MIRACL-like: nDCG@10, mean of 8 languages", "MIRACL-like: nDCG@10, en", "nDCG@10, scifact"."""
    kind = "languages" if task else "datasets"
    where = f"mean of {len(langs)} {kind}" if lang is None else lang
    head = f"{task}: {metric_label(metric)}" if task else metric_label(metric)
    return f"{head}, {where}" if where else head


def chart_panels(
    model: Mapping[str, Mapping], baselines: Mapping[str, Mapping] | None = None, *, label: str = "model"
) -> list[list[Panel]]:
    """The panels of the chart of ``model`` beside ``baselines``, as rows of the figure's grid.

    Args:
        model: the evaluated model's table (module docstring); its reference rows become baseline systems.
        baselines: ``{legend label: table}``, e.g. ``{"untrained model (step 0)": ...}``; tasks, languages
            and metrics are the model's.
        label: the model's legend label.
    """
    systems, bm25 = _systems(model, baselines or {}, label)
    grid = []
    for row in _layout(model):
        panels = []
        for task, lang, metric in row:
            langs = list(model[task]["languages"])
            bars = {}
            for name, per_task in systems.items():
                values = {
                    mode: _value(per_lang, langs, lang, metric)
                    for mode, per_lang in per_task.get(task, {}).items()
                }
                bars[name] = {mode: v for mode, v in values.items() if v is not None}
            title = _title(task, lang, metric, langs)
            panels.append(Panel(task, lang, metric, title, bars, _value(bm25.get(task), langs, lang, metric)))
        grid.append(panels)
    if len(grid) == 1 or all(len(row) == 1 for row in grid):  # one task, or a mean per task: wrap
        flat = [p for row in grid for p in row]
        ncols = len(flat) if len(flat) <= 4 else 3
        grid = [flat[i : i + ncols] for i in range(0, len(flat), ncols)]
    return grid


def _draw(ax, panel: Panel, colors: dict[str, str]) -> None:
    """Bars centred per mode over the systems evaluated in it; BM25 as a line, its value on the right axis."""
    present = {mode for values in panel.bars.values() for mode in values}
    modes = [m for m in MODE_NAMES if m in present] + sorted(present - set(MODE_NAMES))
    width = 0.84 / max(1, max(sum(m in v for v in panel.bars.values()) for m in modes) if modes else 1)
    small = len(panel.bars) >= 3
    for x, mode in enumerate(modes):
        here = [name for name, values in panel.bars.items() if mode in values]
        for i, name in enumerate(here):
            offset = (i - (len(here) - 1) / 2) * width
            bars = ax.bar(x + offset, panel.bars[name][mode], width, color=colors[name], label=name, zorder=2)
            for text in ax.bar_label(bars, fmt="%.1f", fontsize=7 if small else 8, padding=1.5):
                text.set(
                    zorder=4, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.85}
                )
    top = max([v for values in panel.bars.values() for v in values.values()] + [panel.bm25 or 0.0, 1.0])
    if panel.bm25 is not None:
        ax.axhline(panel.bm25, color=_BM25_COLOR, linestyle="--", linewidth=1.4, label="BM25", zorder=3)
        right = ax.secondary_yaxis("right")
        right.set_yticks([panel.bm25], [f"BM25\n{panel.bm25:.1f}"], color=_BM25_COLOR, fontsize=8)
        right.tick_params(length=0)
    ax.set_xticks(
        range(len(modes)), [MODE_NAMES.get(m, m) for m in modes], rotation=25, ha="right", fontsize=9
    )
    ax.set_xlim(-0.6, len(modes) - 0.4)
    ax.set_ylim(0, top * 1.15)
    ax.set_title(panel.title, fontsize=10)
    ax.set_ylabel("score x100", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.3, zorder=0)


def results_figure(
    model: Mapping[str, Mapping],
    baselines: Mapping[str, Mapping] | None = None,
    *,
    label: str = "model",
    title: str | None = None,
):
    """The chart as a :class:`matplotlib.figure.Figure` (arguments: :func:`chart_panels`; ``title`` on top)."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    grid = chart_panels(model, baselines, label=label)
    names = list(dict.fromkeys(name for row in grid for panel in row for name in panel.bars))
    others = [name for name in names if name != label]
    colors = {name: _BASELINE_COLORS[i % len(_BASELINE_COLORS)] for i, name in enumerate(others)}
    colors[label] = _MODEL_COLOR
    nrows, ncols = len(grid), max(len(row) for row in grid)
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(_PANEL_SIZE[0] * ncols, _PANEL_SIZE[1] * nrows + 0.7), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for row, ax_row in zip(grid, axes, strict=True):
            for j, ax in enumerate(ax_row):
                if j < len(row):
                    _draw(ax, row[j], colors)
                else:
                    ax.set_visible(False)
        handles = [Patch(color=colors[name], label=name) for name in names]
        if any(panel.bm25 is not None for row in grid for panel in row):
            handles.append(
                Line2D([], [], color=_BM25_COLOR, linestyle="--", label="BM25 (lexical reference)")
            )
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), frameon=False)
        if title:
            fig.suptitle(title, fontsize=12, fontweight="bold")
    return fig


def write_chart(
    path: str | Path,
    model: Mapping[str, Mapping],
    baselines: Mapping[str, Mapping] | None = None,
    *,
    label: str = "model",
    title: str | None = None,
) -> Path:
    """Draw :func:`results_figure` into the PNG ``path``; return the path."""
    fig = results_figure(model, baselines, label=label, title=title)
    fig.savefig(path, dpi=120, metadata={"Software": None})
    return Path(path)
