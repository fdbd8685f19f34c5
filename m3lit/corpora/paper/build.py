"""Build a paper benchmark (:mod:`m3lit.corpora.paper.catalog`) into m3lit's suite layout, in the cache.

::

    $M3LIT_CACHE/paper/<benchmark>/<language>/      one BEIR folder per language, built once (manifest.json:
        corpus.jsonl, queries.jsonl,                 repo, revision, splits, sizes, sha256 of every file)
        qrels/test.tsv (the reported split),
        qrels/dev.tsv (the tuning split, if any)
    $M3LIT_CACHE/paper/<benchmark>/suites/<langs>/suite.json   the suite over the requested languages

The reported split is always written as ``qrels/test.tsv`` (MIRACL's and MSMARCO's reported split is called
``dev`` on the Hub), so a suite evaluates with the default ``split=test``; the tuning split, when the Hub
set has one, is ``qrels/dev.tsv``. The rows are read with mteb's own retrieval loader
(``RetrievalDatasetLoader``), which reads the Hub configs ``<lang>-corpus``, ``<lang>-queries`` and
``<lang>-qrels`` (``corpus``, ``queries``, ``default`` for one language) at the pinned revision.

Offline, ``hub_dir=DIR`` reads the same repositories from local copies at ``DIR/<owner>/<name>`` (a
``git clone`` of the Hub repository, or any folder in its layout); the tests build such copies.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from m3lit.corpora.paper import mkqa
from m3lit.corpora.paper.catalog import BENCHMARKS, PaperBenchmark, paper_benchmark
from m3lit.corpora.paper.hub import HubReadError, corpus_rows, has_split, loader, reading
from m3lit.files.cache import atomic_build, cache_root, cached_build
from m3lit.files.errors import PathError, UsageError
from m3lit.files.jsonl import write_jsonl

__all__ = ["HubReadError", "build_paper_suite", "is_paper_benchmark"]

#: Bumped when the folder layout written here changes (it is part of every cached folder's key).
LAYOUT_VERSION = 1


def is_paper_benchmark(suite: str) -> bool:
    """Whether ``suite=`` names a paper benchmark (``miracl``, ``mldr``, ``beir:<name>``), not a folder."""
    return suite in BENCHMARKS or suite.startswith("beir:")


def build_paper_suite(
    name: str,
    languages: Sequence[str] | None = None,
    *,
    hub_dir: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Build (or reuse) the suite folder of benchmark ``name`` over ``languages`` (default: all of them).

    Args:
        name: ``miracl``, ``mldr`` or ``beir:<name>``.
        languages: Hub subsets to include (MIRACL/MLDR language codes); must be None for a BEIR set.
        hub_dir: read the repositories from ``hub_dir/<owner>/<name>`` instead of the Hub.
        force: rebuild the language folders even when the cache holds them.

    Returns:
        the folder holding ``suite.json``.

    Raises:
        UsageError: an unknown benchmark or language, or the mteb extra is not installed.
        PathError: ``hub_dir`` lacks the repository.
        HubReadError: the Hub (or the local copy) could not be read.
    """
    try:
        bench = paper_benchmark(name)
    except KeyError as error:
        raise UsageError(f"suite={error.args[0]}") from None
    subsets = _subsets(bench, languages)
    repo = _repository(bench.repo, hub_dir)
    root = cache_root() / "paper" / bench.name.replace(":", "-")
    # a local copy is not pinned by the revision, so its folder is part of what the build depends on
    source = {"local_copy": str(Path(hub_dir).resolve())} if hub_dir is not None else {}
    settings = {"repo": bench.repo, "revision": bench.revision, "layout": LAYOUT_VERSION, **source}
    write = functools.partial(_write_language, bench, repo)
    if bench.corpus:  # one corpus for every language (MKQA): built once, linked into each language
        corpus = root / "corpus"
        corpus_repo = _repository(bench.corpus[0], hub_dir)
        shared = cached_build(
            corpus, {"repo": bench.corpus[0], "revision": bench.corpus[1], "layout": LAYOUT_VERSION, **source},
            functools.partial(mkqa.write_corpus, bench, corpus_repo), force=force,
        )  # fmt: skip
        settings["corpus"] = shared["hash"]
        write = functools.partial(mkqa.write_language, bench, repo, corpus / "corpus.jsonl")
    datasets, tunable = {}, True
    for subset in subsets or [""]:
        folder = root / (subset or "default")
        manifest = cached_build(
            folder, {**settings, "subset": subset}, functools.partial(write, subset), force=force
        )
        datasets[subset or "en"] = f"../../{folder.name}"
        tunable = tunable and manifest["splits"]["dev"] is not None  # a task tunes on all languages or none
    return _write_suite(root / "suites" / "-".join(subsets or ["default"]), bench, datasets, tunable)


def _subsets(bench: PaperBenchmark, languages: Sequence[str] | None) -> list[str]:
    """The requested Hub subsets, checked against the benchmark's; [] for a one-language set."""
    if not bench.languages:
        if languages:
            raise UsageError(f"languages: {bench.name} has one language (English); drop languages=")
        return []
    if not languages:
        return list(bench.languages)
    known = bench.languages + bench.extra_languages
    unknown = [lang for lang in languages if lang not in known]
    if unknown:
        raise UsageError(
            f"languages: {', '.join(map(repr, unknown))} not in {bench.name}; its languages: {', '.join(known)}"
        )
    return list(dict.fromkeys(languages))


def _repository(repo: str, hub_dir: str | Path | None) -> str:
    """What is read: the Hub id ``repo``, or its local copy under ``hub_dir``."""
    if hub_dir is None:
        return repo
    local = Path(hub_dir) / repo
    if not local.is_dir():
        raise PathError("hub_dir", hub_dir, f"no local copy of {repo} (expected the folder {local})")
    return str(local.resolve())


def _write_language(bench: PaperBenchmark, repo: str, subset: str, out: Path) -> dict[str, Any]:
    """Write one language's BEIR folder into ``out``; the manifest entries (sizes, splits)."""
    with reading(bench, bench.repo, bench.revision, subset, source=repo):
        test = loader(repo, bench.revision, bench.test_split, subset).load()
        dev = None
        if bench.dev_split and has_split(repo, bench.revision, subset, bench.dev_split):
            dev = loader(repo, bench.revision, bench.dev_split, subset).load()
    write_jsonl(out / "corpus.jsonl", corpus_rows(test["corpus"]))
    splits = {"test": test, **({"dev": dev} if dev is not None else {})}
    write_jsonl(out / "queries.jsonl", _query_rows(data["queries"] for data in splits.values()))
    (out / "qrels").mkdir()
    for split, data in splits.items():
        order = [str(query_id) for query_id in data["queries"]["id"]]
        _write_qrels(out / "qrels" / f"{split}.tsv", data["relevant_docs"], order)
    return {
        "splits": {"test": bench.test_split, "dev": bench.dev_split if dev is not None else None},
        "sizes": {
            "corpus": len(test["corpus"]),
            **{f"{split}_queries": len(data["relevant_docs"]) for split, data in splits.items()},
        },
    }


def _query_rows(query_sets: Iterable) -> Iterable[dict[str, str]]:
    """BEIR query lines of every split, each id once (the splits' queries are normally disjoint)."""
    seen: set[str] = set()
    for queries in query_sets:
        for row in queries:
            query_id = str(row["id"])
            if query_id not in seen:
                seen.add(query_id)
                yield {"_id": query_id, "text": row["text"]}


def _write_qrels(path: Path, relevant: dict[str, dict[str, int]], order: Sequence[str]) -> None:
    """BEIR qrels (header, then query-id, corpus-id, score per line): the queries in ``order`` (the Hub's
    query order; mteb's mapping has none that is stable), each one's documents sorted by id, so the same
    revision always gives the same bytes."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for query_id in order:
            for doc_id, grade in sorted(relevant[query_id].items()):
                handle.write(f"{query_id}\t{doc_id}\t{int(grade)}\n")


def _write_suite(folder: Path, bench: PaperBenchmark, datasets: dict[str, str], tunable: bool) -> Path:
    """``folder/suite.json`` for the built language folders (rewritten atomically when it differs);
    ``tunable``: every language has dev qrels."""
    task = {
        "name": bench.task,
        "metrics": list(bench.metrics),
        "datasets": datasets,
        "retrieval": bench.retrieval,
        **({"dev_split": "dev"} if tunable else {}),
    }
    spec = {"name": bench.name, "source": {"repo": bench.repo, "revision": bench.revision}, "tasks": [task]}
    text = json.dumps(spec, indent=1, ensure_ascii=False) + "\n"
    if (folder / "suite.json").is_file() and (folder / "suite.json").read_text(encoding="utf-8") == text:
        return folder
    with atomic_build(folder, force=True, marker="suite.json") as tmp:
        (tmp / "suite.json").write_text(text, encoding="utf-8")
    return folder
