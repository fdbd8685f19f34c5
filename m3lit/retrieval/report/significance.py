"""Paired significance of the difference between two rows of a results table, from their TREC run files.

A table cell is a mean over queries (over languages, then queries, for a suite task's average), so whether
"All beats BM25" is more than noise is a question about per-query differences. The test here is Fisher's
paired randomisation (permutation) test, the one IR papers use for such claims (Smucker, Allan & Carterette,
CIKM 2007): under the null hypothesis the two systems are exchangeable on every query, so each query's
difference d_i is as likely to have the opposite sign. With the table's weights w_i (1/n for one dataset;
1/(L n_l) for the average of L languages, so the statistic IS the difference of the table's averages)::

    T = sum_i w_i d_i,   p = (1 + #{resamples r : |sum_i w_i s_ri d_i| >= |T|}) / (1 + resamples)

with s_ri independent random signs (two-sided; the +1 keeps p > 0, an exact Monte-Carlo p-value).

Per-query values are those :func:`m3lit.retrieval.metrics.evaluate_ranking` averages
(:func:`~m3lit.retrieval.answers.per_query_values`: qrels metrics, or answer-string recall), read back from the ``runs/`` files every evaluation
writes (:func:`~m3lit.retrieval.trec.read_trec_run`) against the qrels recorded in its ``results.json``; the
dataset files must still hash as recorded. ``python -m m3lit.compare`` is the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m3lit.files.errors import UsageError, UserError
from m3lit.retrieval.answers import per_query_values
from m3lit.retrieval.beir import RetrievalDataset, load_beir
from m3lit.retrieval.report.provenance import dataset_hash, read_results
from m3lit.retrieval.report.tables import reference_label, row_label
from m3lit.retrieval.trec import read_trec_run

__all__ = ["Comparison", "compare_runs", "format_p", "headline_tests", "paired_randomization_test"]

#: The row label of the evaluated model in a suite's ``runs/<task>/<lang>/`` folders.
MODEL_SYSTEM = "model"


@dataclass
class Comparison:
    """One table cell compared: system A's mean, system B's, their difference and its p-value.

    Attributes:
        name: dataset (language) name, or ``"Avg"`` for a group's average.
        metric: e.g. ``"ndcg@10"``.
        mean_a, mean_b: the two table values, in [0, 1].
        difference: ``mean_a - mean_b``.
        p_value: two-sided paired randomisation p-value of the difference.
        num_queries: queries compared (those with a relevant document).
    """

    name: str
    metric: str
    mean_a: float
    mean_b: float
    difference: float
    p_value: float
    num_queries: int


def paired_randomization_test(
    values_a: np.ndarray,
    values_b: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Two-sided paired randomisation test of ``sum_i w_i (a_i - b_i)`` (module docstring).

    Args:
        values_a, values_b: (n,) per-query values of the two systems on the same queries.
        weights: (n,) non-negative weights of the statistic; None = 1/n (the mean difference).
        resamples: random sign vectors drawn.
        seed: seed of the sign draws (the same seed gives the same p-value).

    Returns:
        (the weighted difference, its p-value).
    """
    a, b = np.asarray(values_a, np.float64), np.asarray(values_b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"paired_randomization_test: need two (n,) arrays, n > 0; got {a.shape} and {b.shape}"
        )
    w = np.full(a.size, 1.0 / a.size) if weights is None else np.asarray(weights, np.float64)
    if w.shape != a.shape or (w < 0).any():
        raise ValueError(f"paired_randomization_test: weights must be (n,) and >= 0, got shape {w.shape}")
    if resamples < 1:
        raise ValueError(f"paired_randomization_test: resamples must be >= 1, got {resamples}")
    wd = w * (a - b)  # (n,)
    observed = float(wd.sum())
    tolerance = 1e-12 * max(1.0, float(np.abs(wd).sum()))  # a flip that reproduces |T| counts (float sums)
    rng = np.random.default_rng(seed)
    extreme, chunk = 0, max(1, 2**22 // a.size)
    for start in range(0, resamples, chunk):
        signs = rng.integers(0, 2, size=(min(chunk, resamples - start), a.size), dtype=np.int8) * 2 - 1
        extreme += int((np.abs(signs @ wd) >= abs(observed) - tolerance).sum())
    return observed, (1 + extreme) / (1 + resamples)


def compare_runs(
    run: str | Path,
    a: str,
    b: str,
    *,
    b_run: str | Path | None = None,
    tasks: Sequence[str] | None = None,
    metric: str | None = None,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, list[Comparison]]:
    """Compare two rows of an evaluation's tables, dataset by dataset and on each group's average.

    Args:
        run: a folder with ``results.json`` and ``runs/`` (``m3lit.evaluate``'s output_dir, or a training run).
        a, b: the rows: a mode (``all``, ``bm25``...) of the evaluated model, or ``<label>/<mode>`` for a
            suite's reference model (e.g. ``multilingual-e5-small/dense``).
        b_run: the folder of ``b`` when it comes from another evaluation of the same datasets.
        tasks: a suite's tasks to compare (None: every task). Without a suite the datasets form one group.
        metric: e.g. ``ndcg@10``; None: each task's first metric (the table's headline).
        resamples, seed: of :func:`paired_randomization_test`.

    Returns:
        group (suite task, or ``"datasets"``) -> one :class:`Comparison` per dataset, then ``"Avg"``.
    """
    layout_a = _RunLayout(Path(run))
    layout_b = layout_a if b_run is None else _RunLayout(Path(b_run))
    if b_run is not None:
        for key, entry in layout_a.datasets.items():
            other = layout_b.datasets.get(key)
            if other is None or other.get("sha256") != entry.get("sha256"):
                raise UsageError(
                    f"b_run={b_run}: dataset {key!r} is not the one {run} evaluated (hash differs or absent)"
                )
    return _compare(layout_a, a, layout_b, b, tasks, metric, resamples, seed)


def _compare(
    layout_a: _RunLayout,
    a: str,
    layout_b: _RunLayout,
    b: str,
    tasks: Sequence[str] | None,
    metric: str | None,
    resamples: int,
    seed: int,
) -> dict[str, list[Comparison]]:
    """:func:`compare_runs` on loaded layouts (``layout_b``'s datasets already checked against ``layout_a``'s)."""
    out: dict[str, list[Comparison]] = {}
    for group, keys in layout_a.groups(tasks).items():
        name = metric or layout_a.headline_metric(group)
        per_dataset, pooled = [], {"a": [], "b": [], "w": []}
        for key in keys:
            dataset = layout_a.load(key)
            va, vb = (
                layout.per_query(key, spec, name, dataset) for layout, spec in ((layout_a, a), (layout_b, b))
            )
            diff, p = paired_randomization_test(va, vb, resamples=resamples, seed=seed)
            per_dataset.append(
                Comparison(key.rpartition("/")[2], name, va.mean(), vb.mean(), diff, p, va.size)
            )
            pooled["a"].append(va)
            pooled["b"].append(vb)
            pooled["w"].append(np.full(va.size, 1.0 / (len(keys) * va.size)))
        va, vb, w = (np.concatenate(pooled[k]) for k in ("a", "b", "w"))
        diff, p = paired_randomization_test(va, vb, w, resamples=resamples, seed=seed)
        mean_a = float(np.mean([c.mean_a for c in per_dataset]))
        mean_b = float(np.mean([c.mean_b for c in per_dataset]))
        out[group] = [*per_dataset, Comparison("Avg", name, mean_a, mean_b, diff, p, int(va.size))]
    return out


def headline_tests(run: str | Path, *, resamples: int = 10_000, seed: int = 0) -> str:
    """Markdown: a suite run's All row against BM25 and against the reference model, on each task's
    headline average, with paired randomisation p-values (the claims a results table invites).

    Empty when the run has no All row; a comparison is left out when its other row was not evaluated.
    """
    _, settings = read_results(run)
    modes = set(settings.get("modes") or ())
    if not settings.get("suite") or "all" not in modes:
        return ""
    others = [("bm25", row_label("", "bm25"))] * ("bm25" in modes)
    if settings.get("reference"):
        label = reference_label(settings["reference"])
        others.append((f"{label}/dense", row_label(label, "dense")))
    if not others:
        return ""
    lines = [
        "### All against the reference rows: paired randomisation tests on the averages",
        "",
        "| Task | Metric | All | Other row | Other | All - other | p | Queries |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    layout = _RunLayout(Path(run))  # one layout: datasets and All's per-query values are read once
    for spec, label in others:
        for task, rows in _compare(layout, "all", layout, spec, None, None, resamples, seed).items():
            avg = rows[-1]
            lines.append(
                f"| {task} | {avg.metric} | {100 * avg.mean_a:.1f} | {label} | {100 * avg.mean_b:.1f} "
                f"| {100 * avg.difference:+.2f} | {format_p(avg.p_value)} | {avg.num_queries} |"
            )
    lines += [
        "",
        f"p: two-sided, {resamples} sign flips over the queries; per language: `python -m m3lit.compare run=<this folder>`",
    ]
    return "\n".join(lines) + "\n"


def format_p(p: float) -> str:
    """A p-value for a table: three decimals, ``< 0.001`` below that."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


class _RunLayout:
    """Where an evaluation's datasets and TREC files are, from its ``results.json`` settings."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.results, settings = read_results(folder)
        if not settings or "datasets" not in settings:
            raise UserError(f"{folder}/results.json records no settings (written before m3lit recorded them)")
        self.settings = settings
        self.datasets: dict[str, dict] = settings["datasets"]
        self.suite = bool(settings.get("suite"))
        self._loaded: dict[str, RetrievalDataset] = {}  # key -> dataset, hash-checked once
        self._values: dict[tuple[str, str, str], np.ndarray] = {}  # (key, row, metric) -> per-query values

    def per_query(self, key: str, spec: str, metric: str, dataset: RetrievalDataset) -> np.ndarray:
        """(E,) ``metric`` of each evaluated query of dataset ``key`` for row ``spec``, from its TREC file."""
        if (key, spec, metric) not in self._values:
            ranking = read_trec_run(self.trec_path(key, spec), dataset)
            self._values[key, spec, metric] = per_query_values(ranking, dataset, metric)
        return self._values[key, spec, metric]

    def groups(self, tasks: Sequence[str] | None) -> dict[str, list[str]]:
        if not self.suite:
            if tasks:
                raise UsageError(
                    f"task={list(tasks)}: {self.folder} is not a suite evaluation (it has no tasks)"
                )
            return {"datasets": list(self.datasets)}
        groups: dict[str, list[str]] = {}
        for key in self.datasets:
            groups.setdefault(key.split("/", 1)[0], []).append(key)
        unknown = sorted(set(tasks or ()) - set(groups))
        if unknown:
            raise UsageError(f"task={unknown}: not in {self.folder}'s suite (tasks: {sorted(groups)})")
        return {t: groups[t] for t in (tasks or groups)}

    def headline_metric(self, group: str) -> str:
        if self.suite:
            return self.results["tasks"][group]["metrics"][0]
        return self.settings["metrics"][0]

    def load(self, key: str) -> RetrievalDataset:
        if key not in self._loaded:
            self._loaded[key] = self._load(key)
        return self._loaded[key]

    def _load(self, key: str) -> RetrievalDataset:
        entry, split = self.datasets[key], self.settings.get("split", "test")
        now = dataset_hash(entry["path"], split)["sha256"]
        if now != entry["sha256"]:
            raise UserError(
                f"{entry['path']}: the dataset changed since {self.folder} was evaluated (sha256 differs)"
            )
        return load_beir(
            entry["path"], split=split, unknown_qrels=self.settings.get("unknown_qrels", "error")
        )

    def trec_path(self, key: str, spec: str) -> Path:
        system, _, mode = spec.rpartition("/")
        runs = self.folder / "runs"
        if self.suite:
            path = runs / key / (system or MODEL_SYSTEM) / f"{mode}.trec"
        elif system:
            raise UsageError(f"{spec!r}: {self.folder} has no reference rows (not a suite evaluation)")
        else:
            path = (runs if len(self.datasets) == 1 else runs / key) / f"{mode}.trec"
        if not path.is_file():
            raise UserError(f"{path}: no TREC run for {spec!r} (the modes evaluated are in results.json)")
        return path
