"""Benchmark suites: several retrieval tasks over several languages, reported as the paper's tables.

BGE-M3 reports one table per task (arXiv:2402.03216 §4: MIRACL Table 1, MKQA Table 2, MLDR Table 4):
a row per method, a column per language and the average. A suite reproduces that shape for any set of
BEIR folders. It is described by a ``suite.json`` that a benchmark builder writes beside its folders::

    {"name": "my-benchmark",
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
(system, mode) becomes one row; BM25 depends only on the tokenizer and is computed once. The rows that cannot
change between runs, the reference system's and BM25's, are kept on disk keyed by the model's content, the
data and every setting (:mod:`m3lit.retrieval.row_cache`): a second run reuses them and logs so.

One suite is one way through (:func:`run_suite`): **plan** (read ``suite.json``, load the reference model:
:func:`read_suite`, :func:`suite_systems`), then per task and language **load** the dataset once per split,
**index** and **score** it for every system (:func:`evaluate_suite`, through
:func:`m3lit.retrieval.pipeline.evaluate_retrieval`), and **report** (:func:`suite_settings`,
:func:`m3lit.retrieval.report.write.write_suite_reports`).

Results (``results.json``, the same ``{"settings", "results"}`` envelope as every m3lit evaluation)::

    {"settings": {...}, "results": {"suite": name, "averages": {task: {row: {metric: mean}}},
     "tasks": {task: {"metrics": [...], "languages": [...],
                      "rows": {row label: {language: {metric: value in [0, 1]}}},
                      "fusion": {mode: {"weights", "default", "dev", ...}}}}}}      # tuned tasks only
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3lit.data.lengths import tokenizer_fingerprint
from m3lit.files.errors import PathError
from m3lit.files.jsonl import DataError
from m3lit.retrieval.beir import RetrievalDataset, load_beir
from m3lit.retrieval.config import RetrievalConfig
from m3lit.retrieval.fusion_tuning import FUSED_MODES, WEIGHT_FIELDS, choose_weights
from m3lit.retrieval.modes import NEEDS, NO_HEADS
from m3lit.retrieval.options import EvaluationOptions
from m3lit.retrieval.pipeline import (
    evaluate_retrieval,
    retrieval_depth,
    retrieve,
    score_rankings,
    usable_modes,
)
from m3lit.retrieval.report.provenance import dataset_hash, read_json_object
from m3lit.retrieval.report.tables import MODE_NAMES, reference_label, row_label
from m3lit.retrieval.report.write import write_suite_reports
from m3lit.retrieval.row_cache import cached_rows, model_fingerprint

__all__ = [
    "Suite",
    "SuiteTask",
    "SuiteSystem",
    "check_suite_folder",
    "evaluate_suite",
    "load_suite",
    "read_suite",
    "run_suite",
    "suite_settings",
    "suite_systems",
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


@dataclass(frozen=True)
class Suite:
    """A read ``suite.json``: its ``name`` (the report's title; the path when it names none) and tasks."""

    name: str
    tasks: tuple[SuiteTask, ...]


@dataclass
class SuiteSystem:
    """A model and how to evaluate it.

    Attributes:
        label: row-label prefix ("" for the main model: its rows are the paper's mode names).
        model: an :class:`~m3lit.model.M3Model`.
        modes: modes to evaluate (``bm25`` is added once by :func:`evaluate_suite` when asked).
        retrieval: RetrievalConfig overrides for this system (pooling, prefixes, lengths), applied after
            the task's own.
        cache_rows: its rows are read from / kept in the row cache (:mod:`m3lit.retrieval.row_cache`), keyed
            by the model's content: for a model that does not change between runs (the released reference).
    """

    label: str
    model: Any
    modes: tuple[str, ...]
    retrieval: dict[str, Any] = field(default_factory=dict)
    cache_rows: bool = False

    def row(self, mode: str) -> str:
        return row_label(self.label, mode)


# ------------------------------------------------------------------------------------------------- plan
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


def read_suite(path: str | Path) -> Suite:
    """Read ``suite.json`` (a file or the folder holding it); every dataset folder must exist."""
    file, spec = read_json_object(path, SUITE_FILE, "benchmark suite file")
    tasks = tuple(_task(file, i, task) for i, task in enumerate(spec.get("tasks") or []))
    if not tasks:
        raise DataError("the suite lists no tasks", path=file)
    return Suite(name=spec.get("name", str(path)), tasks=tasks)


def load_suite(path: str | Path) -> list[SuiteTask]:
    """The tasks of ``suite.json`` (:func:`read_suite`)."""
    return list(read_suite(path).tasks)


def _task(path: Path, i: int, task: Mapping[str, Any]) -> SuiteTask:
    """``tasks[i]`` of the suite file ``path``, its dataset folders (and dev qrels) checked."""
    for key in ("name", "metrics", "datasets"):
        if key not in task:
            raise DataError(f"tasks[{i}] has no {key!r}", path=path)
    datasets = {lang: path.parent / rel for lang, rel in task["datasets"].items()}
    wanted = ["corpus.jsonl"] + ([f"qrels/{task['dev_split']}.tsv"] if task.get("dev_split") else [])
    for lang, folder in datasets.items():
        for name in wanted:
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{path}: tasks[{i}] ({task['name']}) {lang}: no {name} in {folder}")
    return SuiteTask(
        name=str(task["name"]),
        metrics=tuple(task["metrics"]),
        datasets=datasets,
        retrieval=dict(task.get("retrieval") or {}),
        extra_modes=tuple(task.get("extra_modes") or ()),
        dev_split=task.get("dev_split"),
    )


def suite_systems(model, options: EvaluationOptions) -> list[SuiteSystem]:
    """The main system (``model`` in ``options.modes`` but BM25) and, with ``options.reference``, the released
    model loaded and evaluated dense-only with its own retrieval settings (its rows cached)."""
    systems = [SuiteSystem("", model, tuple(m for m in options.modes if m != "bm25"))]
    reference = options.reference
    if reference:
        from m3lit.model.training_checkpoint import load_model

        released = load_model(str(reference["name_or_path"]), key="reference.name_or_path")
        if options.device is not None:
            released = released.to(options.device)
        label, overrides = reference_label(reference), dict(reference.get("retrieval") or {})
        systems.append(SuiteSystem(label, released.eval(), ("dense",), overrides, cache_rows=True))
    return systems


# ----------------------------------------------------------------------------- load, index and score
def evaluate_suite(
    systems: Sequence[SuiteSystem],
    tasks: Sequence[SuiteTask],
    options: EvaluationOptions | None = None,
    *,
    runs_dir: str | Path | None = None,
) -> dict[str, dict]:
    """Evaluate every system on every (task, language); return ``{task: {"metrics", "languages", "rows"}}``.

    Each language's dataset is loaded once per split and every system is scored on it. A task's
    ``extra_modes`` are added to systems that evaluate more than dense (the fine-tuned model), and BM25 (with
    the first system's tokenizer) is evaluated once per dataset when ``options.modes`` holds ``bm25``.
    Retrieval settings are layered: ``options.retrieval`` (e.g. ``configs/evaluate.yaml``'s), then the
    task's, then the system's. With ``runs_dir`` every ranked list is written as
    ``<runs_dir>/<task>/<lang>/<system>/<mode>.trec`` (BM25's under the first system's folder). With
    ``options.tune_fusion``, the first system's fused modes on a task with a ``dev_split`` are ranked with
    weights chosen on its dev queries (the task's block gains ``"fusion"``); each corpus is still encoded
    once, for the dev and the test queries together. The rows of BM25 and of a ``cache_rows`` system come
    from the row cache when an earlier run made them with the same model, data and settings
    (:mod:`m3lit.retrieval.row_cache`). ``options.data``, ``metrics`` and ``unknown_qrels`` are not read (a
    task names its own metrics).
    """
    state = _SuiteState(list(systems), options or EvaluationOptions())
    return {task.name: _evaluate_task(task, state, runs_dir) for task in tasks}


class _SuiteState:
    """What one suite evaluation keeps across its tasks: each system's encoded corpora (:func:`retrieve`'s
    ``corpus_cache``), and the fingerprints that key cached rows, computed once when first needed."""

    def __init__(self, systems: list[SuiteSystem], options: EvaluationOptions) -> None:
        self.systems, self.options = systems, options
        self.corpus_caches: list[dict] = [{} for _ in systems]  # one corpus cache per system
        self._models: dict[tuple[int, bool], str] = {}
        self._tokenizer: str | None = None

    def model_key(self, index: int, modes: Sequence[str]) -> str:
        """The content fingerprint of system ``index``'s model (:func:`model_fingerprint`), its sparse and
        ColBERT heads left out when none of ``modes`` uses them."""
        heads = any(NEEDS[mode] - NO_HEADS for mode in modes)
        if (index, heads) not in self._models:
            self._models[index, heads] = model_fingerprint(self.systems[index].model, heads=heads)
        return self._models[index, heads]

    def tokenizer_key(self) -> str:
        """The fingerprint of the first system's tokenizer: what BM25 depends on."""
        if self._tokenizer is None:
            self._tokenizer = tokenizer_fingerprint(self.systems[0].model.tokenizer)
        return self._tokenizer

    def device_type(self, index: int) -> str:
        """Where system ``index`` encodes (``cpu``, ``cuda``): numbers may differ in the last digits."""
        device = self.options.device or next(self.systems[index].model.parameters()).device
        return str(device).split(":")[0]


def _evaluate_task(task: SuiteTask, state: _SuiteState, runs_dir) -> dict:
    """One task's block: every language loaded once and scored for every system (the main one tuned)."""
    options, systems = state.options, state.systems
    rows: dict[str, dict[str, dict[str, float]]] = {}
    tuned = (
        _TunedFusion(task, options.ignore_identical_ids) if options.tune_fusion and task.dev_split else None
    )
    if options.tune_fusion and tuned is None:
        log.warning("%s names no dev_split: its fused modes keep the task's fixed weights", task.name)
    plans = [  # per system: its modes and retrieval settings on this task
        (system, _system_modes(task, system),
         RetrievalConfig.from_mapping({**options.retrieval, **task.retrieval, **system.retrieval}))
        for system in systems
    ]  # fmt: skip
    for lang, folder in task.datasets.items():
        dataset = load_beir(folder, options.split, name=f"{task.name}/{lang}")  # once for every system
        data = {"dataset": dataset_hash(folder, options.split), "split": options.split}
        if "bm25" in options.modes:
            runs = _runs_folder(runs_dir, task, lang, systems[0])
            _add_rows(rows, systems[0], lang, _bm25_rows(state, task, dataset, data, plans[0][2], runs))
        for index, (system, modes, config) in enumerate(plans):
            log.info("%s %s: %s in %s", task.name, lang, system.label or "model", modes)
            keywords = {"device": options.device, "progress": options.progress}
            keywords["corpus_cache"] = state.corpus_caches[index]
            runs = _runs_folder(runs_dir, task, lang, system)
            if tuned is not None and index == 0:  # scored once every language's dev queries are in
                tuned.add(lang, folder, dataset, system, modes, config, runs, **keywords)
                continue
            score = functools.partial(
                evaluate_retrieval, system.model, dataset, split=options.split, modes=modes,
                metrics=task.metrics, config=config, ignore_identical_ids=options.ignore_identical_ids,
                **keywords,
            )  # fmt: skip
            if system.cache_rows:
                key = {
                    "rows": "system", "model": state.model_key(index, modes), **data, "modes": modes,
                    "metrics": list(task.metrics), "config": config.to_dict(),
                    "ignore_identical_ids": options.ignore_identical_ids, "device": state.device_type(index),
                }  # fmt: skip
                scores = cached_rows(f"{task.name}/{lang}: {system.label}", key, score, runs)
            else:
                scores = score(runs_dir=runs)
            _add_rows(rows, system, lang, scores)
    block: dict[str, Any] = {"metrics": list(task.metrics), "languages": list(task.datasets)}
    if tuned is not None:
        for lang, system, scores in tuned.finish():
            _add_rows(rows, system, lang, scores)
        if tuned.choices:
            block["fusion"] = {
                m: {**c.to_dict(), "test_default": tuned.test_default[m]} for m, c in tuned.choices.items()
            }
    block["rows"] = _ordered(rows)
    return block


def _runs_folder(runs_dir, task: SuiteTask, lang: str, system: SuiteSystem) -> Path | None:
    """``<runs_dir>/<task>/<lang>/<system>`` (None without ``runs_dir``)."""
    return None if runs_dir is None else Path(runs_dir) / task.name / lang / (system.label or "model")


def _bm25_rows(
    state: _SuiteState,
    task: SuiteTask,
    dataset: RetrievalDataset,
    data: dict,
    config: RetrievalConfig,
    runs: Path | None,
) -> dict:
    """BM25's row on one dataset with the first system's tokenizer (and its settings on ``task``), from the
    row cache when the tokenizer, data and settings are those of an earlier run."""
    options, model = state.options, state.systems[0].model
    log.info("%s: bm25", dataset.name)
    key = {
        "rows": "bm25", "tokenizer": state.tokenizer_key(), "vocab": int(model.encoder.config.vocab_size),
        **data, "metrics": list(task.metrics), "config": config.to_dict(),
        "ignore_identical_ids": options.ignore_identical_ids,
    }  # fmt: skip

    score = functools.partial(
        evaluate_retrieval, model, dataset, split=options.split, modes=["bm25"], metrics=task.metrics,
        config=config, ignore_identical_ids=options.ignore_identical_ids,
    )  # fmt: skip
    return cached_rows(f"{dataset.name}: BM25", key, score, runs)


def _system_modes(task: SuiteTask, system: SuiteSystem) -> list[str]:
    """The system's modes on ``task``: its own and the task's extra modes (systems beyond dense)."""
    modes = list(system.modes)
    if len(modes) > 1:
        modes += [m for m in task.extra_modes if m not in modes]
    return modes


def _add_rows(rows: dict, system: SuiteSystem, lang: str, scores: Mapping[str, Mapping[str, float]]) -> None:
    for mode, values in scores.items():
        label = MODE_NAMES["bm25"] if mode == "bm25" else system.row(mode)
        rows.setdefault(label, {})[lang] = dict(values)


def _ordered(rows: dict) -> dict:
    """The paper's row order: BM25, then the reference systems' rows, then the main model's modes."""
    ours = set(MODE_NAMES.values()) - {MODE_NAMES["bm25"]}
    rank = {label: (0 if label == MODE_NAMES["bm25"] else 2 if label in ours else 1) for label in rows}
    return {label: rows[label] for label in sorted(rows, key=lambda label: rank[label])}


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


# ------------------------------------------------------------------------------------------------ report
def suite_settings(
    options: EvaluationOptions, tasks: Sequence[SuiteTask], results: Mapping, *, model_ref: str, dtype: str
) -> dict:
    """The ``settings`` block of a suite's ``results.json``: everything that made the tables, so
    ``python -m m3lit.evaluate settings=<results.json>`` re-runs them (:mod:`m3lit.retrieval.report.provenance`)."""
    reference = options.reference
    return {
        "model": model_ref,
        "data": None,
        "suite": str(options.suite),
        "reference": None if reference is None else dict(reference),
        "split": options.split,
        "modes": list(options.modes),
        "metrics": sorted({m for task in tasks for m in task.metrics}),
        "dtype": dtype,
        "unknown_qrels": "error",
        "ignore_identical_ids": bool(options.ignore_identical_ids),
        "tune_fusion": bool(options.tune_fusion),
        "retrieval": dict(options.retrieval),
        "tasks": {t.name: _task_settings(t, results[t.name]) for t in tasks},
        "datasets": {
            f"{t.name}/{lang}": {"path": str(folder), **dataset_hash(folder, options.split)}
            for t in tasks
            for lang, folder in t.datasets.items()
        },
    }


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


def run_suite(
    model,
    options: EvaluationOptions,
    output_dir: str | Path,
    *,
    model_ref: str,
    label: str = "model",
    baselines: Mapping[str, Mapping] | None = None,
) -> dict[str, dict]:
    """Evaluate ``model`` (and ``options.reference``) on the suite ``options.suite``; write the reports and runs.

    Plan, load, index, score, report (the module docstring). ``output_dir`` receives ``results.json``
    (settings + tables), ``results.md``, ``results.png`` and ``runs/``; ``model_ref`` says how to load
    ``model`` again (recorded in the settings so the table can be re-run); ``label`` and ``baselines`` are
    the chart's (:func:`m3lit.retrieval.report.write.write_suite_reports`). Returns the tables.
    """
    suite = read_suite(options.suite)
    systems = suite_systems(model, options)
    results = evaluate_suite(systems, suite.tasks, options, runs_dir=Path(output_dir) / "runs")
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    settings = suite_settings(options, suite.tasks, results, model_ref=model_ref, dtype=dtype)
    table = write_suite_reports(
        results, output_dir, suite=suite.name, settings=settings, label=label, baselines=baselines
    )
    print(f"\n{suite.name}: {model_ref}\n\n{table}", flush=True)
    return results
