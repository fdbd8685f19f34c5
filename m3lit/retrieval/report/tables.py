"""The shapes of evaluation results and their names: what the tables, the chart and the suites share.

Results come in three shapes: one dataset ``{mode: {metric: value}}``, several ``{dataset: {mode: {metric:
value}}}`` (:mod:`m3lit.retrieval.report.write`), and a suite's table per task (:mod:`m3lit.retrieval.suite`)::

    {task: {"metrics": [...], "languages": [...], "rows": {row label: {language: {metric: value}}}}}

Values are in [0, 1]; tables print them x100 with one decimal, as the paper does. A row label is a mode's
display name (the paper's row labels, :data:`MODE_NAMES`) for the evaluated model, or ``"<system> (<Mode>)"``
for another system evaluated beside it (a released reference model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "MODE_NAMES",
    "as_table",
    "fmt_score",
    "fusion_note",
    "is_multi_dataset",
    "mean_of",
    "metric_label",
    "ordered_modes",
    "row_label",
    "split_row_label",
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


def reference_label(reference: Mapping) -> str:
    """The system label of a suite's reference model (``{name_or_path, label, retrieval}``): its ``label``,
    else its ``name_or_path``; its TREC files sit under ``runs/<task>/<lang>/<this label>/``."""
    return str(reference.get("label") or reference["name_or_path"])


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
    (:mod:`m3lit.retrieval.report.chart`): one unnamed task whose "languages" are the datasets (``[""]`` for one).

    Returns:
        ``{"": {"metrics": [...], "languages": [...], "rows": {row label: {dataset: {metric: value}}}}}``.
    """
    per_dataset = dict(results) if is_multi_dataset(results) else {"": results}
    modes = ordered_modes(m for per_mode in per_dataset.values() for m in per_mode)
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


def ordered_modes(keys) -> list[str]:
    """``keys`` without repeats, the known modes in the paper's row order first, then the others."""
    keys = list(dict.fromkeys(keys))
    return [m for m in MODE_NAMES if m in keys] + [m for m in keys if m not in MODE_NAMES]


def fmt_score(value: float | None) -> str:
    """A value in [0, 1] as the tables print it: x100, one decimal; ``-`` for a missing one."""
    return "-" if value is None else f"{100 * value:.1f}"


def fusion_note(choices: dict[str, dict]) -> str:
    """One markdown line per mode for a task's report: the weights chosen on dev, what they and the task's own
    weights scored there, and (when given, ``test_default``: language -> value) what the task's own weights
    score on the test queries, i.e. the row the table would show without the choice. ``choices`` as stored
    in the results: mode -> :meth:`m3lit.retrieval.fusion_tuning.FusionChoice.to_dict` (+ ``test_default``)."""
    lines = []
    for mode, c in choices.items():
        n = sorted(set(c["queries"].values()))
        per_lang = "/".join(map(str, n))
        line = (
            f"- {MODE_NAMES[mode]} weights chosen on the dev queries ({per_lang} per language, "
            f"{metric_label(c['metric'])}): {_weights(c['weights'])} (dev {fmt_score(c['dev'])}); the task's "
            f"own {_weights(c['default'])} scored {fmt_score(c['dev_default'])} there"
        )
        if c.get("test_default"):
            line += f" and {fmt_score(float(np.mean(list(c['test_default'].values()))))} on the test queries"
        lines.append(line)
    return "\n".join(lines)


def _weights(weights: Sequence[float]) -> str:
    return " / ".join(f"{w:g}" for w in weights)
