"""Strict loader for retrieval datasets in the BEIR layout.

::

    DIR/corpus.jsonl        {"_id": "d1", "title": "...", "text": "..."}   one document per line
    DIR/queries.jsonl       {"_id": "q1", "text": "..."}                   one query per line
    DIR/qrels/<split>.tsv   query-id <TAB> corpus-id <TAB> score           optional header line
    DIR/answers/<split>.jsonl  {"_id": "q1", "answers": ["..."]}           instead of qrels (see below)

A document's text is ``title + " " + text`` (title optional), as BEIR's own dense-model wrappers join
them. The evaluated queries are those named in the split's qrels (BEIR convention: queries.jsonl may hold
the queries of every split), in the order they first appear there. Relevance grades are integers; a
grade <= 0 means "judged non-relevant".

A split judged by answer strings instead (the paper's MKQA: a passage is relevant when it contains an
answer) has ``answers/<split>.jsonl`` and no qrels file: its queries are those of the answers file, in its
order, each with a non-empty list of answers (:attr:`RetrievalDataset.answers`), scored with
``qa_recall@K`` (:mod:`m3lit.retrieval.answers`).

Every problem is a :class:`~m3lit.files.jsonl.DataError` naming the file, the line and the field: invalid
JSON, a missing or non-string field, a duplicate id, an empty corpus, a malformed qrels row, a duplicate
(query, document) judgement, or a qrels row naming an unknown query or document. For the last one the caller may opt in to an explicit,
counted skip (``unknown_qrels="skip"``, logged as a warning with the count).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from m3lit.files.errors import PathError
from m3lit.files.jsonl import DataError, read_records

__all__ = ["RetrievalDataset", "check_beir_folder", "load_beir", "write_beir"]

log = logging.getLogger(__name__)


@dataclass
class RetrievalDataset:
    """A loaded retrieval test set. Documents and queries are addressed by their row numbers.

    Attributes:
        name: dataset name (the folder name by default).
        corpus_ids: (N,) document ids.
        corpus_texts: (N,) document texts (title + text).
        query_ids: (Q,) ids of the evaluated queries.
        query_texts: (Q,) their texts.
        qrels: (Q,) per query, {document row: grade} for every judged document (empty dicts when the
            split is judged by answers).
        skipped_qrels: qrels rows skipped under ``unknown_qrels="skip"``.
        answers: (Q,) per query, its answer strings; None for a split judged by qrels.
    """

    name: str
    corpus_ids: list[str]
    corpus_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: list[dict[int, int]]
    skipped_qrels: int = 0
    meta: dict = field(default_factory=dict)
    answers: list[list[str]] | None = None

    @property
    def num_relevant_queries(self) -> int:
        """Queries the metrics average over: those with a document of grade > 0, or every query of a split
        judged by answers (a query no passage answers counts 0, RocketQA's recall)."""
        if self.answers is not None:
            return len(self.answers)
        return sum(any(g > 0 for g in judged.values()) for judged in self.qrels)


def _read_jsonl(path: Path, kind: str) -> tuple[list[str], list[str]]:
    """(ids, texts) of a corpus or queries file, validated line by line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {kind} file not found")
    first_line: dict[str, int] = {}
    ids: list[str] = []
    texts: list[str] = []
    for line_no, (doc_id, text) in read_records(path, _record):
        if doc_id in first_line:
            problem = f"duplicate id {doc_id!r} (first seen on line {first_line[doc_id]})"
            raise DataError(problem, path=path, line=line_no, field="_id")
        first_line[doc_id] = line_no
        ids.append(doc_id)
        texts.append(text)
    return ids, texts


def _record(record: dict) -> tuple[str, str]:
    """(id, title + " " + text) of one corpus or queries line."""
    doc_id = record.get("_id")
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id:
        raise DataError("missing or not a non-empty string", field="_id")
    text = record.get("text")
    if not isinstance(text, str):
        raise DataError(f"missing or not a string (id {doc_id!r})", field="text")
    title = record.get("title", "")
    if title is None:
        title = ""
    if not isinstance(title, str):
        raise DataError(f"not a string (id {doc_id!r})", field="title")
    return doc_id, f"{title} {text}".strip() if title else text


def _read_qrels(
    path: Path, query_rows: dict[str, int], doc_rows: dict[str, int], unknown_qrels: str
) -> tuple[dict[int, dict[int, int]], int]:
    """{query row: {doc row: grade}} in order of first appearance, and the number of skipped rows."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: qrels file not found")
    qrels: dict[int, dict[int, int]] = {}
    seen: dict[tuple[int, int], int] = {}
    skipped = 0
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 3:
                raise DataError(
                    f"expected 3 tab-separated fields (query-id, corpus-id, score), got {len(fields)}",
                    path=path,
                    line=line_no,
                )
            qid, did, grade_text = (f.strip() for f in fields)
            try:
                grade = int(grade_text)
            except ValueError:
                if line_no == 1 and not seen:
                    continue  # header line, e.g. "query-id  corpus-id  score"
                raise DataError(f"score {grade_text!r} is not an integer", path=path, line=line_no) from None
            unknown = [f"query id {qid!r}"] if qid not in query_rows else []
            unknown += [f"document id {did!r}"] if did not in doc_rows else []
            if unknown:
                if unknown_qrels == "skip":
                    skipped += 1
                    continue
                raise DataError(
                    f"unknown {' and '.join(unknown)} (pass unknown_qrels='skip' to skip such rows)",
                    path=path,
                    line=line_no,
                )
            key = (query_rows[qid], doc_rows[did])
            if key in seen:
                raise DataError(
                    f"duplicate judgement for ({qid!r}, {did!r}) (first on line {seen[key]})",
                    path=path,
                    line=line_no,
                )
            seen[key] = line_no
            qrels.setdefault(key[0], {})[key[1]] = grade
    if not qrels:
        raise DataError("no judgements", path=path)
    return qrels, skipped


def _read_answers(path: Path, query_rows: dict[str, int]) -> dict[int, list[str]]:
    """{query row: answer strings} of an answers file, in its order, validated line by line."""

    def parse(record: dict) -> tuple[str, list[str]]:
        query_id = record.get("_id")
        if not isinstance(query_id, str) or query_id not in query_rows:
            raise DataError(f"unknown query id {query_id!r} (not in queries.jsonl)", field="_id")
        answers = record.get("answers")
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a for a in answers):
            raise DataError(
                f"must be a non-empty list of non-empty strings (id {query_id!r})", field="answers"
            )
        return query_id, answers

    rows: dict[int, list[str]] = {}
    for line_no, (query_id, answers) in read_records(path, parse):
        if query_rows[query_id] in rows:
            raise DataError(f"duplicate id {query_id!r}", path=path, line=line_no, field="_id")
        rows[query_rows[query_id]] = answers
    if not rows:
        raise DataError("no queries (empty answers file)", path=path)
    return rows


def check_beir_folder(dataset_dir: str | Path, split: str = "test", key: str = "dataset_dir") -> Path:
    """``dataset_dir`` as a Path, if it holds ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``
    (or ``answers/<split>.jsonl``).

    A cheap start-up check (nothing is read): commands call it before they load a model.

    Raises:
        PathError: naming the option ``key``: no such folder, or the files it lacks.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise PathError(key, dataset_dir, "dataset folder not found")
    judgements = (
        f"answers/{split}.jsonl" if (root / f"answers/{split}.jsonl").is_file() else f"qrels/{split}.tsv"
    )
    missing = [name for name in ("corpus.jsonl", "queries.jsonl", judgements) if not (root / name).is_file()]
    if missing:
        raise PathError(key, dataset_dir, f"not a BEIR dataset folder: no {', '.join(missing)}")
    return root


def load_beir(
    dataset_dir: str | Path, split: str = "test", *, unknown_qrels: str = "error", name: str | None = None
) -> RetrievalDataset:
    """Load ``dataset_dir`` (BEIR layout) for ``split``; see the module docstring for the checks.

    Args:
        dataset_dir: folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv.
        split: qrels file to evaluate.
        unknown_qrels: ``"error"`` (default) or ``"skip"`` for qrels rows naming unknown ids.
        name: dataset name (default: the folder name).
    """
    if unknown_qrels not in ("error", "skip"):
        raise ValueError(f"unknown_qrels must be 'error' or 'skip', got {unknown_qrels!r}")
    root = check_beir_folder(dataset_dir, split)
    corpus_path = root / "corpus.jsonl"
    corpus_ids, corpus_texts = _read_jsonl(corpus_path, "corpus")
    if not corpus_ids:
        raise DataError("empty corpus (no documents)", path=corpus_path)
    all_query_ids, all_query_texts = _read_jsonl(root / "queries.jsonl", "queries")
    if not all_query_ids:
        raise DataError("empty queries file (no queries)", path=root / "queries.jsonl")
    query_rows = {qid: i for i, qid in enumerate(all_query_ids)}
    answers_path = root / "answers" / f"{split}.jsonl"
    if answers_path.is_file():
        answers = _read_answers(answers_path, query_rows)
        return RetrievalDataset(
            name=name or root.resolve().name,
            corpus_ids=corpus_ids,
            corpus_texts=corpus_texts,
            query_ids=[all_query_ids[q] for q in answers],
            query_texts=[all_query_texts[q] for q in answers],
            qrels=[{} for _ in answers],
            meta={"path": str(root), "split": split},
            answers=list(answers.values()),
        )
    qrels_path = root / "qrels" / f"{split}.tsv"
    doc_rows = {did: i for i, did in enumerate(corpus_ids)}
    judged, skipped = _read_qrels(qrels_path, query_rows, doc_rows, unknown_qrels)
    if skipped:
        log.warning("%s: skipped %d qrels rows naming unknown query or document ids", qrels_path, skipped)
    order = list(judged)  # query rows in order of first appearance in the qrels
    dataset = RetrievalDataset(
        name=name or root.resolve().name,
        corpus_ids=corpus_ids,
        corpus_texts=corpus_texts,
        query_ids=[all_query_ids[q] for q in order],
        query_texts=[all_query_texts[q] for q in order],
        qrels=[judged[q] for q in order],
        skipped_qrels=skipped,
        meta={"path": str(root), "split": split},
    )
    if dataset.num_relevant_queries == 0:
        raise DataError("no query has a relevant document (grade > 0)", path=qrels_path)
    return dataset


def write_beir(
    dataset_dir: str | Path,
    corpus: dict[str, str | tuple[str, str]],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    split: str = "test",
    **other_splits: dict[str, dict[str, int]],
) -> Path:
    """Write a dataset in the BEIR layout (the inverse of :func:`load_beir`).

    Args:
        dataset_dir: output folder (created).
        corpus: doc id -> text, or -> (title, text).
        queries: query id -> text.
        qrels: query id -> {doc id: grade}.
        split: name of the qrels file.
        other_splits: more qrels files, split name -> qrels (e.g. ``dev=...``), over the same ``queries``.
    """
    root = Path(dataset_dir)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for doc_id, value in corpus.items():
            title, text = value if isinstance(value, tuple) else ("", value)
            handle.write(json.dumps({"_id": doc_id, "title": title, "text": text}, ensure_ascii=False) + "\n")
    with (root / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for query_id, text in queries.items():
            handle.write(json.dumps({"_id": query_id, "text": text}, ensure_ascii=False) + "\n")
    for name, split_qrels in {split: qrels, **other_splits}.items():
        if not split_qrels and name != split:
            continue
        with (root / "qrels" / f"{name}.tsv").open("w", encoding="utf-8") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            for query_id, judged in split_qrels.items():
                for doc_id, grade in judged.items():
                    handle.write(f"{query_id}\t{doc_id}\t{int(grade)}\n")
    return root
