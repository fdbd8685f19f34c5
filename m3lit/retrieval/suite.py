"""Benchmark suites: several retrieval tasks over several languages, reported as the paper's tables.

BGE-M3 reports one table per task (arXiv:2402.03216 §4: MIRACL Table 1, MKQA Table 2, MLDR Table 4):
a row per method, a column per language and the average. A suite reproduces that shape for any set of
BEIR folders. It is described by a ``suite.json`` that a benchmark builder writes beside its folders
(e.g. :mod:`m3lit.corpora.bible.build`)::

    {"name": "bible-compact",
     "tasks": [{"name": "MIRACL-like", "metrics": ["ndcg@10", "recall@100"],
                "datasets": {"en": "miracl/en", "fr": "miracl/fr"},
                "retrieval": {"passage_max_len": 512},        # RetrievalConfig overrides for this task
                "extra_modes": [],                               # e.g. ["dense+mcls"] on long documents
                "dev_split": "dev"}]}                            # optional: qrels/dev.tsv for tuning

Dataset paths are relative to the suite file. The first metric of a task is its primary one (the chart, and
what ``tune_fusion`` maximises). With ``tune_fusion``, a task that names a ``dev_split`` gets its Dense+Sparse
and All weights chosen on those dev queries (:mod:`m3lit.retrieval.fusion_tuning`) before its test queries
are ranked; the choice is reported under the task's tables and in ``results.json`` (``tasks.<task>.fusion``).

A *system* is one model evaluated with one retrieval setting (:class:`SuiteSystem`): e.g. the released
model with its own mean pooling and prefixes in dense mode, or the fine-tuned model in every mode. Each
(system, mode) becomes one row; BM25 depends only on the tokenizer and is computed once.

Results (``results.json``, the same ``{"settings", "results"}`` envelope as every m3lit evaluation)::

    {"settings": {...}, "results": {"suite": name, "averages": {task: {row: {metric: mean}}},
     "tasks": {task: {"metrics": [...], "languages": [...],
                      "rows": {row label: {language: {metric: value in [0, 1]}}},
                      "fusion": {mode: {"weights", "default", "dev", ...}}}}}}      # tuned tasks only
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3lit.files.errors import PathError
from m3lit.files.jsonl import DataError
from m3lit.retrieval.beir import RetrievalDataset, load_beir
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.fusion_tuning import FUSED_MODES, WEIGHT_FIELDS, choose_weights, fusion_note
from m3lit.retrieval.pipeline import (
    evaluate_retrieval,
    retrieval_depth,
    retrieve,
    score_rankings,
    usable_modes,
)
from m3lit.retrieval.report.chart import write_chart
from m3lit.retrieval.report.provenance import read_json_object
from m3lit.retrieval.report.significance import headline_tests
from m3lit.retrieval.report.tables import (
    MODE_NAMES,
    fmt_score,
    mean_of,
    metric_label,
    reference_label,
    row_label,
)

__all__ = [
    "SuiteTask",
    "SuiteSystem",
    "check_suite_folder",
    "load_suite",
    "evaluate_suite",
    "run_suite",
    "suite_tables",
    "averages_table",
    "write_suite_reports",
]

log = logging.getLogger(__name__)

SUITE_FILE = "suite.json"


@dataclass(frozen=True)
class SuiteTask:
    """One task of a suite: a BEIR folder per language, the metrics to report, retrieval overrides."""

    name: str
    metrics: tuple[str, ...]
    datasets: dict[str, Path]
    retrieval: dict[str, Any] = field(default_factory=dict)
    extra_modes: tuple[str, ...] = ()
    dev_split: str | None = None  # qrels/<dev_split>.tsv: queries for choosing fusion weights (tune_fusion)


@dataclass
class SuiteSystem:
    """A model and how to evaluate it.

    Attributes:
        label: row-label prefix ("" for the main model: its rows are the paper's mode names).
        model: an :class:`~m3lit.model.M3Model`.
        modes: modes to evaluate (``bm25`` is added once by :func:`evaluate_suite` when asked).
        retrieval: RetrievalConfig overrides for this system (pooling, prefixes, lengths), applied after
            the task's own.
    """

    label: str
    model: Any
    modes: tuple[str, ...]
    retrieval: dict[str, Any] = field(default_factory=dict)

    def row(self, mode: str) -> str:
        return row_label(self.label, mode)


def check_suite_folder(path: str | Path, key: str = "suite") -> Path:
    """``path`` as a Path if it is a folder holding ``suite.json`` (a start-up check: nothing is read).

    Raises:
        PathError: naming the option ``key``.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise PathError(key, path, "no such folder")
    if not (folder / SUITE_FILE).is_file():
        raise PathError(key, path, f"not a benchmark suite folder (no {SUITE_FILE})")
    return folder


def load_suite(path: str | Path) -> list[SuiteTask]:
    """Read ``suite.json`` (a file or the folder holding it); every dataset folder must exist."""
    path, spec = read_json_object(path, SUITE_FILE, "benchmark suite file")
    tasks = []
    for i, task in enumerate(spec.get("tasks") or []):
        for key in ("name", "metrics", "datasets"):
            if key not in task:
                raise DataError(f"tasks[{i}] has no {key!r}", path=path)
        datasets = {lang: path.parent / rel for lang, rel in task["datasets"].items()}
        wanted = ["corpus.jsonl"] + ([f"qrels/{task['dev_split']}.tsv"] if task.get("dev_split") else [])
        for lang, folder in datasets.items():
            for name in wanted:
                if not (folder / name).is_file():
                    raise FileNotFoundError(
                        f"{path}: tasks[{i}] ({task['name']}) {lang}: no {name} in {folder}"
                    )
        tasks.append(
            SuiteTask(
                name=str(task["name"]),
                metrics=tuple(task["metrics"]),
                datasets=datasets,
                retrieval=dict(task.get("retrieval") or {}),
                extra_modes=tuple(task.get("extra_modes") or ()),
                dev_split=task.get("dev_split"),
            )
        )
    if not tasks:
        raise DataError("the suite lists no tasks", path=path)
    return tasks


def evaluate_suite(
    systems: Sequence[SuiteSystem],
    tasks: Sequence[SuiteTask],
    *,
    bm25: bool = True,
    split: str = "test",
    base: Mapping[str, Any] | None = None,
    ignore_identical_ids: bool = True,
    runs_dir: str | Path | None = None,
    device=None,
    progress: bool = False,
    tune_fusion: bool = False,
) -> dict[str, dict]:
    """Evaluate every system on every (task, language); return ``{task: {"metrics", "languages", "rows"}}``.

    A task's ``extra_modes`` are added to systems that evaluate more than dense (the fine-tuned model), and
    BM25 (with the first system's tokenizer) is evaluated once per dataset when ``bm25`` is set. Retrieval
    settings are layered: ``base`` (e.g. ``configs/evaluate.yaml``'s), then the task's, then the system's.
    With ``runs_dir`` every ranked list is written as ``<runs_dir>/<task>/<lang>/<system>/<mode>.trec``.
    With ``tune_fusion``, the first system's fused modes on a task with a ``dev_split`` are ranked with
    weights chosen on its dev queries (the task's block gains ``"fusion"``); each corpus is still encoded
    once, for the dev and the test queries together.
    """
    out: dict[str, dict] = {}
    caches: list[dict] = [{} for _ in systems]  # one encoded corpus per system (MKQA: one English corpus)
    for task in tasks:
        rows: dict[str, dict[str, dict[str, float]]] = {}
        tuned = _TunedFusion(task, ignore_identical_ids) if tune_fusion and task.dev_split else None
        if tune_fusion and tuned is None:
            log.warning("%s names no dev_split: its fused modes keep the task's fixed weights", task.name)
        for lang, folder in task.datasets.items():
            dataset = load_beir(folder, split, name=f"{task.name}/{lang}")
            for index, system in enumerate(systems):
                modes = list(system.modes)
                if len(modes) > 1:
                    modes += [m for m in task.extra_modes if m not in modes]
                if bm25 and index == 0:
                    modes.append("bm25")
                config = RetrievalConfig.from_mapping({**(base or {}), **task.retrieval, **system.retrieval})
                log.info("%s %s: %s in %s", task.name, lang, system.label or "model", modes)
                keywords = {"device": device, "progress": progress, "corpus_cache": caches[index]}
                runs = (
                    None
                    if runs_dir is None
                    else Path(runs_dir) / task.name / lang / (system.label or "model")
                )
                if tuned is not None and index == 0:  # scored once every language's dev queries are in
                    tuned.add(lang, folder, dataset, system, modes, config, runs, **keywords)
                    continue
                scores = evaluate_retrieval(
                    system.model,
                    dataset,
                    split=split,
                    modes=modes,
                    metrics=task.metrics,
                    config=config,
                    ignore_identical_ids=ignore_identical_ids,
                    runs_dir=runs,
                    **keywords,
                )
                _add_rows(rows, system, lang, scores)
        out[task.name] = {"metrics": list(task.metrics), "languages": list(task.datasets)}
        if tuned is not None:
            for lang, system, scores in tuned.finish():
                _add_rows(rows, system, lang, scores)
            if tuned.choices:
                out[task.name]["fusion"] = {
                    m: {**c.to_dict(), "test_default": tuned.test_default[m]}
                    for m, c in tuned.choices.items()
                }
        out[task.name]["rows"] = _ordered(rows)
    return out


def _add_rows(rows: dict, system: SuiteSystem, lang: str, scores: Mapping[str, Mapping[str, float]]) -> None:
    for mode, values in scores.items():
        label = MODE_NAMES["bm25"] if mode == "bm25" else system.row(mode)
        rows.setdefault(label, {})[lang] = dict(values)


class _TunedFusion:
    """One task's main system under ``tune_fusion``: per language, the dev queries (fused modes only) and then
    the test queries are retrieved while that language's corpus is encoded; once every language is in,
    :func:`choose_weights` picks each fused mode's weights on dev and the test lists are re-ranked with them
    and scored. What the task's own weights score on the test queries is kept for the report
    (``test_default``), so the effect of the choice is visible, never used to make it."""

    def __init__(self, task: SuiteTask, ignore_identical_ids: bool) -> None:
        self.task = task
        self.ignore_identical_ids = ignore_identical_ids
        self.dev: dict[str, list] = {}  # mode -> [(lang, dev dataset, FusionTerms)]
        self.defaults: dict[str, tuple[float, ...]] = {}
        self.pending: list = []  # (lang, system, dataset, RetrievalRun, runs_dir)
        self.choices: dict = {}  # mode -> FusionChoice
        self.test_default: dict[str, dict[str, float]] = {}  # mode -> lang -> test value, task's weights

    def add(
        self,
        lang: str,
        folder: Path,
        dataset: RetrievalDataset,
        system: SuiteSystem,
        modes: list[str],
        config: RetrievalConfig,
        runs_dir: Path | None,
        **keywords: Any,
    ) -> None:
        """Retrieve ``lang``'s dev queries (fused modes) and test queries (every mode); ``keywords`` go to
        :func:`retrieve` (device, progress, the system's corpus cache)."""
        task = self.task
        modes = usable_modes(system.model, modes)
        fused = [m for m in FUSED_MODES if m in modes]
        if fused:
            dev = load_beir(folder, task.dev_split, name=f"{task.name}/{lang}/{task.dev_split}")
            depth = retrieval_depth(task.metrics[:1], self.ignore_identical_ids)
            run = retrieve(system.model, dev, fused, config, depth=depth, **keywords)
            for mode in fused:
                self.dev.setdefault(mode, []).append((lang, dev, run.fusion[mode]))
            self.defaults.update({m: getattr(config, WEIGHT_FIELDS[m]) for m in fused})
        depth = retrieval_depth(task.metrics, self.ignore_identical_ids)
        run = retrieve(system.model, dataset, modes, config, depth=depth, **keywords)
        self.pending.append((lang, system, dataset, run, runs_dir))

    def finish(self):
        """Choose the weights; yield ``(lang, system, scores)`` of every pending test run."""
        metric = self.task.metrics[0]
        for mode, dev in self.dev.items():
            self.choices[mode] = choose_weights(
                dev, mode, metric, self.defaults[mode], ignore_identical_ids=self.ignore_identical_ids
            )
            log.info("%s: %s weights chosen on dev: %s", self.task.name, mode, self.choices[mode].to_dict())
        depth = retrieval_depth(self.task.metrics, self.ignore_identical_ids)
        for lang, system, dataset, run, runs_dir in self.pending:
            fixed = {m: run.rankings[m] for m in self.choices}  # ranked with the task's own weights
            fixed = score_rankings(fixed, dataset, [metric], ignore_identical_ids=self.ignore_identical_ids)
            for mode, choice in self.choices.items():
                self.test_default.setdefault(mode, {})[lang] = fixed[mode][metric]
                run.rankings[mode] = run.fusion[mode].rank(choice.weights, depth)
            scores = score_rankings(
                run.rankings,
                dataset,
                self.task.metrics,
                ignore_identical_ids=self.ignore_identical_ids,
                runs_dir=runs_dir,
            )
            yield lang, system, scores


def _task_settings(task: SuiteTask, block: Mapping) -> dict:
    """What a task's results were made with: its retrieval overrides (with the weights chosen on dev, if any),
    extra modes and dev split."""
    chosen = {WEIGHT_FIELDS[m]: c["weights"] for m, c in (block.get("fusion") or {}).items()}
    return {
        "retrieval": {**task.retrieval, **chosen},
        "extra_modes": list(task.extra_modes),
        "dev_split": task.dev_split,
        "fusion_weights_from": task.dev_split if chosen else None,
    }


def _ordered(rows: dict) -> dict:
    """The paper's row order: BM25, then the reference systems' rows, then the main model's modes."""
    ours = set(MODE_NAMES.values()) - {MODE_NAMES["bm25"]}
    rank = {label: (0 if label == MODE_NAMES["bm25"] else 2 if label in ours else 1) for label in rows}
    return {label: rows[label] for label in sorted(rows, key=lambda label: rank[label])}


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


def run_suite(
    model,
    *,
    model_ref: str,
    suite_dir: str | Path,
    output_dir: str | Path,
    reference: Mapping[str, Any] | None = None,
    modes: Sequence[str] = ("dense", "sparse", "colbert", "dense+sparse", "all", "bm25"),
    split: str = "test",
    base: Mapping[str, Any] | None = None,
    ignore_identical_ids: bool = True,
    device=None,
    progress: bool = False,
    label: str = "model",
    baselines: Mapping[str, Mapping] | None = None,
    tune_fusion: bool = False,
) -> dict[str, dict]:
    """Evaluate ``model`` (and an optional released ``reference``) on a suite; write the reports and runs.

    Args:
        model: the model of the main rows (the paper's Dense ... All rows).
        model_ref: how to load ``model`` again (recorded in the settings so the table can be re-run).
        suite_dir: folder holding ``suite.json``.
        output_dir: ``results.json`` (settings + tables), ``results.md``, ``results.png``, ``runs/``.
        reference: ``{name_or_path, label, retrieval}``: a model evaluated dense-only with its own
            settings, e.g. multilingual-e5-small as released (``retrieval: {pooling: mean, query_prefix:
            "query: ", passage_prefix: "passage: "}``).
        modes: the main model's modes (``bm25`` adds the BM25 row).
        split, base, ignore_identical_ids, device, progress, tune_fusion: as :func:`evaluate_suite`.
        label, baselines: the chart's, as :func:`write_suite_reports`.
    """
    from m3lit.model.training_checkpoint import load_model
    from m3lit.retrieval.report.provenance import dataset_hash

    tasks = load_suite(suite_dir)
    systems = [SuiteSystem("", model, tuple(m for m in modes if m != "bm25"))]
    if reference:
        released = load_model(str(reference["name_or_path"]), key="reference.name_or_path")
        if device is not None:
            released = released.to(device)
        systems.append(
            SuiteSystem(
                reference_label(reference),
                released.eval(),
                ("dense",),
                dict(reference.get("retrieval") or {}),
            )
        )
    results = evaluate_suite(
        systems,
        tasks,
        bm25="bm25" in modes,
        split=split,
        base=base,
        ignore_identical_ids=ignore_identical_ids,
        runs_dir=Path(output_dir) / "runs",
        device=device,
        progress=progress,
        tune_fusion=tune_fusion,
    )
    settings = {
        "model": model_ref,
        "data": None,
        "suite": str(suite_dir),
        "reference": None if reference is None else dict(reference),
        "split": split,
        "modes": list(modes),
        "metrics": sorted({m for task in tasks for m in task.metrics}),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "unknown_qrels": "error",
        "ignore_identical_ids": bool(ignore_identical_ids),
        "tune_fusion": bool(tune_fusion),
        "retrieval": dict(base or {}),
        "tasks": {t.name: _task_settings(t, results[t.name]) for t in tasks},
        "datasets": {
            f"{t.name}/{lang}": {"path": str(folder), **dataset_hash(folder, split)}
            for t in tasks
            for lang, folder in t.datasets.items()
        },
    }
    name = json.loads((Path(suite_dir) / SUITE_FILE).read_text(encoding="utf-8")).get("name", str(suite_dir))
    table = write_suite_reports(
        results, output_dir, suite=name, settings=settings, label=label, baselines=baselines
    )
    print(f"\n{name}: {model_ref}\n\n{table}", flush=True)
    return results
