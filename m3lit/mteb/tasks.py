"""A BEIR folder as a local mteb retrieval task (no Hub needed).

:func:`beir_task` reads a folder with m3lit's strict BEIR loader (:func:`m3lit.retrieval.beir.load_beir`:
every problem is one error naming the file, the line and the field) and gives mteb the same data that
``python -m m3lit.evaluate data=DIR`` scores, under m3lit's conventions:

- a document's text is m3lit's ``title + " " + text`` (given to mteb as the text, with an empty title);
- the evaluated queries are those of the split's qrels, and only documents of grade > 0 are relevant: a
  query without one is left out (m3lit excludes it from its averages; mteb would count it as 0);
- ``ignore_identical_ids`` (on by default, as in ``m3lit.evaluate``) drops a retrieved document whose id is the
  query's.

So mteb's nDCG@k and Recall@k of an m3lit model on the task equal ``m3lit.evaluate``'s on the folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata

from m3lit.retrieval.beir import load_beir

__all__ = ["BeirFolderTask", "beir_task", "task_name"]


def task_name(folder: str | Path) -> str:
    """The task's name: ``<parent>-<folder>`` of the resolved path, characters other than letters, digits,
    ``.``, ``_`` and ``-`` replaced by ``_`` (mteb names its result file after it).

    >>> task_name("/data/bench/miracl/en")
    'miracl-en'
    """
    parts = Path(folder).resolve().parts[-2:]
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(parts))


class BeirFolderTask(AbsTaskRetrieval):
    """A BEIR folder as an mteb retrieval task (see the module docstring); build it with :func:`beir_task`,
    which makes a subclass per folder carrying its ``metadata`` (mteb reads it from the class once the data
    is unloaded)."""

    def __init__(self, folder: str | Path, split: str, ignore_identical_ids: bool) -> None:
        self.folder, self.split = Path(folder), split
        self.ignore_identical_ids = ignore_identical_ids
        super().__init__()

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Read the folder (m3lit's loader) into mteb's split layout: corpus, queries, relevant documents."""
        if self.data_loaded:
            return
        data = load_beir(self.folder, self.split, name=self.metadata.name)
        relevant = {}
        for query_id, judged in zip(data.query_ids, data.qrels, strict=True):
            positives = {data.corpus_ids[row]: grade for row, grade in judged.items() if grade > 0}
            if positives:
                relevant[query_id] = positives
        queries = [(q, t) for q, t in zip(data.query_ids, data.query_texts, strict=True) if q in relevant]
        split = {
            "corpus": Dataset.from_dict(
                {"id": data.corpus_ids, "text": data.corpus_texts, "title": [""] * len(data.corpus_ids)}
            ),
            "queries": Dataset.from_dict({"id": [q for q, _ in queries], "text": [t for _, t in queries]}),
            "relevant_docs": relevant,
            "top_ranked": None,
        }
        self.dataset = {"default": {self.split: split}}
        self.data_loaded = True


def beir_task(
    folder: str | Path,
    split: str = "test",
    *,
    name: str | None = None,
    language: str = "eng-Latn",
    ignore_identical_ids: bool = True,
) -> BeirFolderTask:
    """The BEIR ``folder``'s ``split`` as an mteb retrieval task (main score nDCG@10).

    Args:
        folder: a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
        split: the qrels split to evaluate.
        name: the task's name (default :func:`task_name`).
        language: the texts' language as mteb writes it (ISO 639-3 + script, e.g. ``eng-Latn``).
        ignore_identical_ids: drop a retrieved document whose id equals the query's (BEIR convention).
    """
    name = name or task_name(folder)
    metadata = TaskMetadata(
        name=name,
        description=f"Local BEIR folder {Path(folder).resolve()} (split {split}), read by m3lit.",
        dataset={"path": str(Path(folder).resolve()), "revision": "local"},
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        eval_langs=[language],
        main_score="ndcg_at_10",
        bibtex_citation="",
    )
    task_class = type(f"BeirFolderTask[{name}]", (BeirFolderTask,), {"metadata": metadata})
    return task_class(folder, split, ignore_identical_ids)
