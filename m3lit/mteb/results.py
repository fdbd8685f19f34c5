"""Run mteb task by task and mode by mode; read its scores back in m3lit's shape and tables.

The loop goes task by task, and within a task mode by mode, so the shared :class:`~m3lit.mteb.search.M3Search`
indexes each corpus once and ranks every mode from one search. A retrieval task runs in every mode; every
other task type, and reranking tasks, run once with the dense model (``__dense``).

Scores come back as m3lit's several-dataset results, ``{task: {mode: {metric: value}}}`` (values in [0, 1];
a task with several subsets or splits gives a row each, ``task/subset [split]``): retrieval tasks report
nDCG@10, Recall@100 and MRR@10 under m3lit's names, the other tasks their mteb main score under mteb's name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import mteb
from mteb.abstasks.retrieval import AbsTaskRetrieval

from m3lit.retrieval.report.write import markdown_tables

__all__ = ["RETRIEVAL_METRICS", "evaluate_tasks", "results_table", "runs_every_mode", "task_scores"]

#: mteb's retrieval score names -> m3lit's metric names (the columns of ``m3lit.evaluate``'s table).
RETRIEVAL_METRICS = {"ndcg_at_10": "ndcg@10", "recall_at_100": "recall@100", "mrr_at_10": "mrr@10"}


def runs_every_mode(task) -> bool:
    """A retrieval task that searches a corpus (not a reranking task, which re-ranks given candidates)."""
    return isinstance(task, AbsTaskRetrieval) and "Reranking" not in str(task.metadata.type)


def task_scores(result, main_score: str) -> dict[str, dict[str, float]]:
    """One mteb ``TaskResult`` as row label -> metric -> value (see the module docstring); ``main_score``
    names the main score of a task that is not a retrieval task (its task metadata's)."""
    splits = result.scores
    rows = {}
    for split, entries in splits.items():
        for entry in entries:
            label = result.task_name
            if entry.get("hf_subset", "default") != "default":
                label += f"/{entry['hf_subset']}"
            if len(splits) > 1:
                label += f" [{split}]"
            if any(k in entry for k in RETRIEVAL_METRICS):
                rows[label] = {name: float(entry[k]) for k, name in RETRIEVAL_METRICS.items() if k in entry}
            else:
                rows[label] = {main_score: float(entry["main_score"])}
    return rows


def evaluate_tasks(
    models: Mapping[str, object],
    modes: Sequence[str],
    tasks: Sequence,
    output_dir: str | Path,
    *,
    overwrite: str = "always",
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, dict[str, dict[str, float]]]:
    """Evaluate ``tasks`` with mteb: retrieval tasks with ``models[mode]`` for each of ``modes``, the others
    with ``models["dense"]``; mteb writes its result files under ``output_dir/results``.

    Args:
        models: mode -> mteb model (:func:`m3lit.mteb.model.mteb_models`; must hold ``dense`` when a task is
            not a retrieval task).
        modes: the retrieval modes to run.
        tasks: mteb tasks (their data loaded or not).
        output_dir: mteb's result cache folder.
        overwrite: mteb's overwrite strategy for existing result files.
        batch_size: mteb's data-loader batch size.
        progress: progress bars.

    Returns:
        row label -> mode -> metric -> value (:func:`task_scores`).
    """
    cache = mteb.ResultCache(cache_path=Path(output_dir))
    results: dict[str, dict[str, dict[str, float]]] = {}
    for task in tasks:
        for mode in modes if runs_every_mode(task) else ["dense"]:
            outcome = mteb.evaluate(
                models[mode],
                task,
                cache=cache,
                overwrite_strategy=overwrite,
                encode_kwargs={"batch_size": batch_size},
                show_progress_bar=progress,
            )
            for result in outcome.task_results:
                for label, metrics in task_scores(result, task.metadata.main_score).items():
                    results.setdefault(label, {})[mode] = metrics
    return results


def results_table(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """The markdown tables of ``results`` as ``m3lit.evaluate`` prints several datasets: per metric a row per
    task and a column per mode (x100), retrieval tasks first, then the other tasks (dense)."""
    retrieval = {
        k: v for k, v in results.items() if any(set(m) & set(RETRIEVAL_METRICS.values()) for m in v.values())
    }
    others = {k: v for k, v in results.items() if k not in retrieval}
    parts = [markdown_tables(retrieval)] if retrieval else []
    if others:
        parts.append("Other tasks (dense vectors), mteb's main score:\n\n" + markdown_tables(others))
    return "\n".join(parts)
