"""MKQA as the paper evaluates it: questions in 25 languages against the English NQ passages, judged by answers.

BGE-M3 (arXiv:2402.03216 §4.1, Table 2) searches the BEIR NQ corpus (2.68M English Wikipedia passages)
with MKQA's questions in each language and counts a hit when a top-k passage contains an answer
(:mod:`m3lit.retrieval.answers`). The corpus is read once from ``mteb/nq``; each language's folder holds its
questions (``queries.jsonl``), their answers (``answers/test.jsonl``) and a hard link to the shared corpus.

The questions and answers come from FlagEmbedding's evaluation file ``MKQA_test-data.zip`` in the Hub
dataset ``Shitao/bge-m3-data``: one ``<lang>.jsonl`` per language, lines ``{"id", "question", "answers"}``.
A question without any answer string can never be hit; it is left out, counted in the language's
manifest (``left_out.unanswerable``) and in a warning.
"""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from m3lit.corpora.paper.catalog import PaperBenchmark
from m3lit.corpora.paper.hub import corpus_rows, loader, reading
from m3lit.files.cache import read_manifest
from m3lit.files.jsonl import DataError, read_records, write_jsonl

__all__ = ["ARCHIVE", "write_corpus", "write_language"]

log = logging.getLogger(__name__)

#: The file of questions and answers in the Hub repository.
ARCHIVE = "MKQA_test-data.zip"


def write_corpus(bench: PaperBenchmark, repo: str, out: Path) -> dict[str, Any]:
    """``out/corpus.jsonl``: the BEIR NQ passages read from ``repo`` (``mteb/nq``'s corpus config)."""
    corpus_repo, revision = bench.corpus
    with reading(bench, corpus_repo, revision, "corpus", source=repo):
        corpus = loader(repo, revision, "test", "").load()["corpus"]
    write_jsonl(out / "corpus.jsonl", corpus_rows(corpus))
    return {"sizes": {"corpus": len(corpus)}}


def write_language(bench: PaperBenchmark, repo: str, corpus: Path, subset: str, out: Path) -> dict[str, Any]:
    """One language's folder: its questions and answers from the archive, the shared corpus linked in."""
    with reading(bench, bench.repo, bench.revision, ARCHIVE):
        archive, commit = _archive(repo, bench.revision)
    queries, answers, unanswerable = [], [], 0
    for _, (query_id, question, strings) in _questions(archive, subset, out):
        if not strings:  # MKQA's unanswerable questions: no passage can hold an answer
            unanswerable += 1
            continue
        queries.append({"_id": query_id, "text": question})
        answers.append({"_id": query_id, "answers": strings})
    if unanswerable:
        log.warning("mkqa %s: left out %d questions without answer strings", subset, unanswerable)
    write_jsonl(out / "queries.jsonl", queries)
    (out / "answers").mkdir()
    write_jsonl(out / "answers" / "test.jsonl", answers)
    _link(corpus, out / "corpus.jsonl")
    return {
        "commit": commit,
        "splits": {"test": "test", "dev": None},
        "sizes": {"corpus": read_manifest(corpus.parent)["sizes"]["corpus"], "test_queries": len(queries)},
        "left_out": {"unanswerable": unanswerable},
    }


def _archive(repo: str, revision: str) -> tuple[Path, str]:
    """The local path of :data:`ARCHIVE` (downloaded into the Hugging Face cache) and the commit read."""
    local = Path(repo) / ARCHIVE
    if Path(repo).is_dir():
        if not local.is_file():
            raise FileNotFoundError(f"{local}: not found")
        return local, "local copy"
    from huggingface_hub import hf_hub_download

    path = Path(hf_hub_download(repo, ARCHIVE, repo_type="dataset", revision=revision))
    return path, path.parent.name  # .../snapshots/<commit>/MKQA_test-data.zip


def _questions(archive: Path, subset: str, scratch: Path):
    """(line, id, question, answers) of ``<subset>.jsonl`` in the archive, validated line by line; the member
    is unpacked into ``scratch`` (the build's own temporary folder, never the archive's: that is the Hugging
    Face cache or the user's local copy) and removed after reading."""
    with zipfile.ZipFile(archive) as bundle:
        members = [n for n in bundle.namelist() if n.rsplit("/", 1)[-1] == f"{subset}.jsonl"]
        if len(members) != 1:
            raise DataError(f"expected one {subset}.jsonl in the archive, found {len(members)}", path=archive)
        target = scratch / f".{subset}.questions.jsonl"
        with bundle.open(members[0]) as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink)
    try:
        yield from read_records(target, _question)
    finally:
        target.unlink(missing_ok=True)


def _question(record: dict) -> tuple[str, str, list[str]]:
    """(id, question, answer strings) of one archive line."""
    query_id = record.get("id")
    if isinstance(query_id, int) and not isinstance(query_id, bool):
        query_id = str(query_id)
    if not isinstance(query_id, str) or not query_id:
        raise DataError("missing or not a non-empty string", field="id")
    question = record.get("question")
    if not isinstance(question, str) or not question:
        raise DataError(f"missing or not a non-empty string (id {query_id!r})", field="question")
    answers = record.get("answers")
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise DataError(f"not a list of strings (id {query_id!r})", field="answers")
    return query_id, question, [a for a in answers if a.strip()]


def _link(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (one copy of a 1.5 GB corpus), or a copy across devices."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
