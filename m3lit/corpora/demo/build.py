"""The offline demo corpus: a real retrieval task built from the docstrings of Python's standard library.

Run ``python -m m3lit.corpora.demo.build [out=DIR] [force=true]`` (or ``make demo-data``; ``--help`` lists the
options); it prints the sizes, the build time and the content hash. Every machine with Python can build it, without any download,
deterministically for a given Python version.

Task: query = the first sentence of a public callable's docstring; positive = its qualified name,
signature and the rest of its docstring (e.g. query "Wrap a single paragraph of text, returning a list
of wrapped lines." -> ``textwrap.wrap(text, width=70, **kwargs)`` + the remaining text). Queries that
occur more than once (inherited or copied docstrings) are dropped entirely, since they are ambiguous.

Files (``DemoPaths``)::

    <out>/train.jsonl          training lines with BM25 hard negatives (stage 2)
    <out>/pairs.jsonl          the same queries and positives, no negatives (stage 1)
    <out>/eval/                held-out split, BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv
    <out>/tokenizer/           Unigram tokenizer trained on this corpus (m3lit.model.tiny_tokenizer.build_tokenizer)
    <out>/manifest.json        sizes, per-file sha256 and the overall hash

The held-out queries are a fixed pseudo-random choice (by a hash of the name) among callables whose
positive has text beyond the name and signature; the eval corpus holds every document (the held-out
positives plus all training positives as distractors). Hard negatives come from BM25 (``bm25s``) over
the training documents only (held-out positives never appear in training), excluding the positive and
near-duplicates (documents whose word set overlaps the positive's by Jaccard >= 0.8, or whose own
first sentence overlaps the query's by Jaccard >= 0.7).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3lit.corpora.demo.stdlib_docs import collect_in_subprocess
from m3lit.files.cache import cache_root, cached_build
from m3lit.files.errors import run_command
from m3lit.files.jsonl import write_jsonl
from m3lit.files.options import command_help, parse_key_values

__all__ = ["DEMO_VERSION", "OPTIONS", "DemoPaths", "build_demo", "default_demo_dir", "main", "make_pairs"]

#: Command-line options (``key=value``) and their defaults.
OPTIONS: dict[str, Any] = {
    "out": None,  # output folder; null: the cache folder (default_demo_dir: <cache>/demo-py<X.Y>-v<version>)
    "force": False,  # rebuild even if the folder holds a finished build
    "num_test": 300,  # held-out queries
}

#: Bump when the output format or the selection rules change (it is part of the cache folder name).
DEMO_VERSION = 2
_SIGNATURE_LINE = re.compile(r"^[\w.]+\(.*\)(\s*->.*)?$")
_SENTENCE = re.compile(r"(.+?[.!?])(?=\s|$)")
_WORD = re.compile(r"\w+")
#: The files whose sha256 the manifest records (their overall ``hash`` identifies a build).
HASHED_FILES = (
    "train.jsonl",
    "pairs.jsonl",
    "eval/corpus.jsonl",
    "eval/queries.jsonl",
    "eval/qrels/test.tsv",
    "tokenizer/tokenizer.json",
)


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo corpus lies. ``manifest`` holds the sizes and hashes."""

    root: Path
    pairs: Path
    train: Path
    eval_dir: Path
    tokenizer_dir: Path
    manifest: dict


def default_demo_dir() -> Path:
    """``<cache root>/demo-py<major>.<minor>-v<DEMO_VERSION>`` (see :func:`m3lit.files.cache.cache_root`)."""
    return cache_root() / f"demo-py{sys.version_info.major}.{sys.version_info.minor}-v{DEMO_VERSION}"


def split_doc(doc: str) -> tuple[str, str]:
    """``(first sentence, rest)`` of a docstring; a leading C-style signature line is skipped.

    >>> split_doc("sqrt(x)\\n\\nReturn the square root\\nof x.  More text.\\n\\nDetails.")
    ('Return the square root of x.', 'More text.\\n\\nDetails.')
    """
    lines = doc.strip().splitlines()
    if lines and _SIGNATURE_LINE.match(lines[0].strip()):
        lines = lines[1:]
    text = "\n".join(lines).strip()
    paragraph = text.split("\n\n", 1)[0]
    flat = " ".join(paragraph.split())
    match = _SENTENCE.match(flat)
    first = match.group(1) if match else flat
    # locate the end of the first sentence in the original text, word by word
    consumed, words = 0, first.split()
    for word in words:
        consumed = text.index(word, consumed) + len(word)
    return first, text[consumed:].strip()


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def make_pairs(items: Sequence[dict], max_chars: int = 2000) -> list[dict]:
    """Turn collected docstrings into ``{"name", "query", "pos", "rest"}`` records (sorted by name).

    Keeps queries of 3 to 40 words with at least one letter; drops every query that occurs more than
    once (case-insensitive) because it cannot identify its positive.
    """
    records = []
    for item in items:
        query, rest = split_doc(item["doc"])
        if not 3 <= len(query.split()) <= 40 or not re.search(r"[A-Za-z]", query):
            continue
        positive = f"{item['name']}{item['signature']}\n{rest}".strip()[:max_chars]
        records.append({"name": item["name"], "query": query, "pos": positive, "rest": rest})
    counts = Counter(r["query"].lower() for r in records)
    return sorted((r for r in records if counts[r["query"].lower()] == 1), key=lambda r: r["name"])


def _held_out(records: Sequence[dict], num_test: int, min_rest_chars: int) -> set[int]:
    eligible = [i for i, r in enumerate(records) if len(r["rest"]) >= min_rest_chars]
    ranked = sorted(eligible, key=lambda i: hashlib.sha1(records[i]["name"].encode()).hexdigest())
    return set(ranked[:num_test])


def _hard_negatives(
    records: Sequence[dict], train_ids: Sequence[int], num_negatives: int, depth: int
) -> dict[int, list[int]]:
    """BM25 over the training documents; per training query the top ``num_negatives`` non-duplicates."""
    import bm25s

    docs = [records[i]["pos"] for i in train_ids]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(docs, stopwords="en", show_progress=False), show_progress=False)
    queries = bm25s.tokenize([records[i]["query"] for i in train_ids], stopwords="en", show_progress=False)
    hits, _ = retriever.retrieve(queries, k=min(depth, len(docs)), show_progress=False, n_threads=1)
    doc_words = [_words(d) for d in docs]
    first_words = [_words(records[i]["query"]) for i in train_ids]
    out: dict[int, list[int]] = {}
    for row, qid in enumerate(train_ids):
        negatives = []
        for col in hits[row].tolist():
            if (
                col == row
                or _jaccard(doc_words[col], doc_words[row]) >= 0.8
                or _jaccard(first_words[col], first_words[row]) >= 0.7
            ):
                continue  # the positive itself or a near-duplicate of it
            negatives.append(train_ids[col])
            if len(negatives) == num_negatives:
                break
        out[qid] = negatives
    return out


def build_demo(
    out_dir: str | os.PathLike | None = None,
    *,
    force: bool = False,
    modules: Sequence[str] | None = None,
    num_test: int = 300,
    num_negatives: int = 15,
    bm25_depth: int = 60,
    min_rest_chars: int = 40,
    vocab_size: int = 8000,
) -> DemoPaths:
    """Build (or return the cached) demo corpus.

    Args:
        out_dir: output folder (None: :func:`default_demo_dir`). Reused when its manifest has this version.
        force: rebuild even when cached.
        modules: restrict the walk to these top-level modules (tests); None walks the whole stdlib.
        num_test: held-out queries.
        num_negatives: BM25 hard negatives stored per training line.
        bm25_depth: BM25 candidates inspected per query.
        min_rest_chars: held-out positives need this much docstring beyond the first sentence.
        vocab_size: demo tokenizer size.
    """
    out = Path(out_dir) if out_dir is not None else default_demo_dir()

    def build(tmp: Path) -> dict:
        start = time.perf_counter()
        records = make_pairs(collect_in_subprocess(modules))
        if len(records) < num_test * 2:
            raise RuntimeError(
                f"only {len(records)} usable docstrings; too few for {num_test} held-out queries"
            )
        held_out = _held_out(records, num_test, min_rest_chars)
        test_ids = sorted(held_out)
        train_ids = [i for i in range(len(records)) if i not in held_out]
        negatives = _hard_negatives(records, train_ids, num_negatives, bm25_depth)
        _write_training(tmp, records, train_ids, negatives)
        _write_eval(tmp / "eval", records, test_ids)
        from m3lit.model.tiny_tokenizer import build_tokenizer

        texts = [r["query"] for r in records] + [r["pos"] for r in records]
        build_tokenizer(texts, vocab_size=vocab_size).save_pretrained(str(tmp / "tokenizer"))
        return {
            "python": sys.version.split()[0],
            "modules": list(modules) if modules else "stdlib",
            "sizes": {
                "docstrings": len(records),
                "train_pairs": len(train_ids),
                "train_negatives_per_query": num_negatives,
                "train_lines_with_full_negatives": sum(len(negatives[i]) == num_negatives for i in train_ids),
                "eval_queries": len(test_ids),
                "eval_corpus": len(records),
            },
            "build_seconds": round(time.perf_counter() - start, 2),
        }

    manifest = cached_build(out, {"version": DEMO_VERSION}, build, force=force, files=HASHED_FILES)
    return DemoPaths(out, out / "pairs.jsonl", out / "train.jsonl", out / "eval", out / "tokenizer", manifest)


def _write_training(
    out: Path, records: Sequence[dict], train_ids: Sequence[int], negatives: dict[int, list[int]]
) -> None:
    """``train.jsonl`` (query, positive, BM25 hard negatives: stage 2) and ``pairs.jsonl`` (no negatives: stage 1)."""
    write_jsonl(
        out / "train.jsonl",
        (
            {
                "query": records[i]["query"],
                "pos": [records[i]["pos"]],
                "neg": [records[j]["pos"] for j in negatives[i]],
            }
            for i in train_ids
        ),
    )
    write_jsonl(
        out / "pairs.jsonl",
        ({"query": records[i]["query"], "pos": [records[i]["pos"]], "neg": []} for i in train_ids),
    )


def _write_eval(eval_dir: Path, records: Sequence[dict], test_ids: Sequence[int]) -> None:
    """The held-out split in BEIR layout: every document in the corpus, the ``test_ids`` queries and their qrels."""
    from m3lit.retrieval.beir import write_beir  # loads torch: only when building

    write_beir(
        eval_dir,
        {f"d{i}": r["pos"] for i, r in enumerate(records)},
        {f"q{i}": records[i]["query"] for i in test_ids},
        {f"q{i}": {f"d{i}": 1} for i in test_ids},
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m m3lit.corpora.demo.build`` / ``m3lit-demo-data``); a user error prints
    one ``error:`` line and raises ``SystemExit`` (:mod:`m3lit.files.errors`)."""
    return run_command(_run, argv, help=lambda: command_help(__name__, OPTIONS))


def _run(args: list[str]) -> int:
    options = parse_key_values(args, OPTIONS, "demo")
    start = time.perf_counter()
    paths = build_demo(options["out"], force=options["force"], num_test=options["num_test"])
    print(
        json.dumps(
            {"root": str(paths.root), **paths.manifest["sizes"], "hash": paths.manifest["hash"]}, indent=2
        )
    )
    print(f"ready in {time.perf_counter() - start:.1f}s (build took {paths.manifest['build_seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
