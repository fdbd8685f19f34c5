"""The Bible benchmark's content: evaluation tasks (BEIR dicts) and training lines, from :class:`BibleText`.

Pure functions of ``(spec, bible, rng)``; :mod:`m3lit.corpora.bible.build` writes what they return. The split:
Old Testament books (:data:`TRAIN_BOOKS`, 1-39) feed training only, New Testament books (40-66) evaluation
only; a cross-reference is used only when both of its ends lie in the books of the part that uses it, so the
cross-testament ones are never used.

Ids. A verse is ``"B.C.V"`` (``"43.3.16"``), a chapter ``"B.C"``. On the verse tasks (MIRACL-like,
MKQA-like) a query's id is its verse's id, and its own verse (in the corpus translation) sits in the corpus
unlabelled: it is left out of that query's ranking by BEIR's ``ignore_identical_ids`` convention. On the
chapter task (MLDR-like) the query verse is cut out of its chapter's text instead.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

from m3lit.corpora.bible.source import PRIMARY, SECOND, TRANSLATIONS, BibleText, Key
from m3lit.corpora.bible.spec import GOSPELS, REST_OF_NT, TRAIN_BOOKS, BibleBenchSpec

__all__ = [
    "Task",
    "chapter_tasks",
    "gospel_task",
    "training_lines",
    "verse_id",
    "verse_tasks",
]


Qrels = dict[str, dict[str, int]]  # query id -> {doc id: grade}


class Task(NamedTuple):
    """One BEIR folder's content. ``queries`` holds the test queries, then the dev queries (BEIR convention:
    one queries file for every split); each split's qrels name its own queries."""

    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]  # query id -> text
    qrels: Qrels  # qrels/test.tsv
    dev_qrels: Qrels = {}  # qrels/dev.tsv (BibleBenchSpec.dev_queries / mldr_dev_queries): tuning, never reported


def verse_id(key: Key) -> str:
    return ".".join(map(str, key))


def _inside(key: Key, books: tuple[int, int]) -> bool:
    return books[0] <= key[0] <= books[1]


def _targets(
    bible: BibleText, books: tuple[int, int], keep: set[Key], to: tuple[int, int] | None = None
) -> dict[Key, list[Key]]:
    """Cross-references from ``books`` into ``to`` (default: ``books``), both ends in ``keep`` (sorted lists,
    sorted sources)."""
    to = books if to is None else to
    out: dict[Key, list[Key]] = {}
    for src, dst in bible.crossrefs:
        if _inside(src, books) and _inside(dst, to) and src in keep and dst in keep:
            out.setdefault(src, []).append(dst)
    return out


def _common(bible: BibleText, codes: Sequence[str], books: tuple[int, int]) -> set[Key]:
    """Verse keys in ``books`` that have text in every translation of ``codes``."""
    first, *rest = sorted(set(codes))
    return {k for k in bible.verses[first] if _inside(k, books) and all(k in bible.verses[c] for c in rest)}


def _take(items: Sequence, n: int, field: str, rng: random.Random) -> list:
    if len(items) < n:
        raise ValueError(f"BibleBenchSpec.{field}={n}, but only {len(items)} eligible verses exist")
    return rng.sample(list(items), n)


def verse_tasks(spec: BibleBenchSpec, bible: BibleText, rng: random.Random) -> dict[tuple[str, str], Task]:
    """MIRACL-like (monolingual) and MKQA-like (query language -> English corpus) tasks, keyed ``(task, lang)``.

    Query verses: NT verses (in ``spec.eval_books``) with at least one cross-reference inside those books,
    with text in every translation involved; one sample, shared by all languages (and the first
    ``min(miracl_queries, mkqa_queries)`` shared by both tasks). Corpus: every verse of ``spec.eval_books`` in
    the corpus translation. Relevant (grade 1): the query verse's cross-references, in the corpus translation.

    Dev queries (``spec.dev_queries`` per language): eligible verses that are not test queries, the same in
    every language and both tasks, drawn by a generator of their own (seeded ``"<seed>/dev"``) so that the
    test queries and the training lines are exactly those of a build without them. The same kind of query
    over the same corpus, for choosing settings such as fusion weights without looking at the test queries.
    """
    books = spec.eval_books
    codes = [PRIMARY[lang] for lang in {*spec.miracl_languages, *spec.mkqa_languages, "en"}]
    targets = _targets(bible, books, _common(bible, codes, books))
    order = _take(
        sorted(targets), max(spec.miracl_queries, spec.mkqa_queries), "miracl_queries/mkqa_queries", rng
    )
    dev = []
    if spec.dev_queries:
        rest = sorted(set(targets) - set(order))
        dev = sorted(_take(rest, spec.dev_queries, "dev_queries", random.Random(f"{spec.seed}/dev")))
    tasks = {}
    for task, languages, size in (
        ("miracl", spec.miracl_languages, spec.miracl_queries),
        ("mkqa", spec.mkqa_languages, spec.mkqa_queries),
    ):
        chosen = sorted(order[:size])
        for lang in languages:
            query_code, corpus_code = PRIMARY[lang], PRIMARY[lang if task == "miracl" else "en"]
            corpus = {verse_id(k): ("", t) for k, t in bible.verses[corpus_code].items() if _inside(k, books)}
            queries = {verse_id(k): bible.verses[query_code][k] for k in [*chosen, *dev]}
            qrels = {verse_id(k): {verse_id(t): 1 for t in targets[k]} for k in chosen}
            dev_qrels = {verse_id(k): {verse_id(t): 1 for t in targets[k]} for k in dev}
            tasks[(task, lang)] = Task(corpus, queries, qrels, dev_qrels)
    return tasks


def gospel_task(bible: BibleText, queries: int, rng: random.Random, code: str = PRIMARY["en"]) -> Task:
    """Queries: ``queries`` Gospel verses (drawn by ``rng``) with at least one cross-reference into the rest of
    the NT; corpus: every verse of books 44-66; relevant (grade 1): the query's cross-references there. All in
    translation ``code``."""
    keep = set(bible.verses[code])
    targets = _targets(bible, GOSPELS, keep, to=REST_OF_NT)
    if len(targets) < queries:
        raise ValueError(
            f"{queries} calibration queries asked, but only {len(targets)} Gospel verses qualify"
        )
    chosen = sorted(rng.sample(sorted(targets), queries))
    corpus = {verse_id(k): ("", t) for k, t in bible.verses[code].items() if _inside(k, REST_OF_NT)}
    return Task(
        corpus,
        {verse_id(k): bible.verses[code][k] for k in chosen},
        {verse_id(k): {verse_id(t): 1 for t in targets[k]} for k in chosen},
    )


def _round_robin(
    by_chapter: dict[tuple[int, int], list[Key]], n: int, field: str, rng: random.Random
) -> list[Key]:
    """``n`` distinct verses, one per chapter (chapters in random order) before any chapter gives a second.

    A chapter gives at most a quarter of its candidate verses (chapters under 4 give none), so that at least
    three quarters of its text remain once the query verses are cut out."""
    pools = {ch: rng.sample(keys, len(keys) // 4) for ch, keys in sorted(by_chapter.items())}
    order = sorted(pools)
    rng.shuffle(order)
    deepest = max((len(p) for p in pools.values()), default=0)
    sequence = [pools[ch][r] for r in range(deepest) for ch in order if r < len(pools[ch])]
    if len(sequence) < n:
        raise ValueError(f"BibleBenchSpec.{field}={n}, but only {len(sequence)} eligible verses exist")
    return sequence[:n]


def _query_verses(
    bible: BibleText, languages: Sequence[str], books: tuple[int, int], min_words: int
) -> dict[tuple[int, int], list[Key]]:
    """Candidate query verses per chapter: text in every translation involved, ``min_words`` words in each."""
    codes = [c for lang in languages for c in {PRIMARY[lang], SECOND.get(lang, PRIMARY[lang])}]
    by_chapter: dict[tuple[int, int], list[Key]] = {}
    for key in sorted(_common(bible, codes, books)):
        if all(len(bible.verses[c][key].split()) >= min_words for c in codes):
            by_chapter.setdefault(key[:2], []).append(key)
    return by_chapter


def _chapters(
    bible: BibleText, code: str, books: tuple[int, int], cut: set[Key]
) -> dict[tuple[int, int], str]:
    """Chapter texts of ``code`` in ``books``: its verses joined by spaces, the ``cut`` verses left out."""
    parts: dict[tuple[int, int], list[str]] = {}
    for key, text in bible.verses[code].items():
        if _inside(key, books):
            chapter = parts.setdefault(key[:2], [])
            if key not in cut:
                chapter.append(text)
    return {ch: " ".join(texts) for ch, texts in parts.items()}


def chapter_tasks(spec: BibleBenchSpec, bible: BibleText, rng: random.Random) -> dict[tuple[str, str], Task]:
    """MLDR-like tasks keyed ``("mldr", lang)``: a verse (from the second translation where the language has
    one, else the corpus translation) -> its chapter (doc id ``"B.C"``, title ``"<book name> C"``), with every
    query verse cut out of its chapter's text. One verse per chapter while chapters last; one sample of verse
    keys shared by all languages.

    Dev queries (``spec.mldr_dev_queries``) continue the same round-robin after the test queries, so the test
    queries are those of a build without them and no chapter gives a verse twice. They are cut out of their
    chapters too: a dev query meets the same task as a test query (its verse absent from the corpus), at the
    price of test chapters a verse shorter than in a build without dev queries."""
    books = spec.mldr_books
    by_chapter = _query_verses(bible, spec.mldr_languages, books, spec.min_query_words)
    wanted = spec.mldr_queries + spec.mldr_dev_queries
    drawn = _round_robin(by_chapter, wanted, "mldr_queries + mldr_dev_queries", rng)
    test, dev = sorted(drawn[: spec.mldr_queries]), sorted(drawn[spec.mldr_queries :])
    tasks = {}
    for lang in spec.mldr_languages:
        corpus_code, query_code = PRIMARY[lang], SECOND.get(lang, PRIMARY[lang])
        names = bible.books[corpus_code]
        corpus = {
            f"{b}.{c}": (f"{names.get(b, b)} {c}", text)
            for (b, c), text in _chapters(bible, corpus_code, books, set(drawn)).items()
        }
        queries = {verse_id(k): bible.verses[query_code][k] for k in [*test, *dev]}
        qrels, dev_qrels = ({verse_id(k): {f"{k[0]}.{k[1]}": 1} for k in keys} for keys in (test, dev))
        tasks[("mldr", lang)] = Task(corpus, queries, qrels, dev_qrels)
    return tasks


def _line(kind: str, query: str, pos: list[str], query_code: str, pos_code: str) -> dict:
    """One training line (m3lit schema) plus provenance: ``kind`` and both translation codes. Mining groups
    lines by ``pos_translation`` so that a passage's translation in another language is never a negative."""
    return {"query": query, "pos": pos, "neg": [], "kind": kind, "query_translation": query_code, "pos_translation": pos_code}  # fmt: skip


def _draw(items: Sequence, n: int, rng: random.Random) -> list:
    """``n`` items: whole shuffled passes over ``items`` (no repeat before every item was used once)."""
    out: list = []
    while len(out) < n and items:
        out += rng.sample(list(items), min(len(items), n - len(out)))
    return out


def training_lines(spec: BibleBenchSpec, bible: BibleText, rng: random.Random) -> dict[str, list[dict]]:
    """Training files from the Old Testament, keyed by path under ``train/``.

    * ``stage1/pairs.jsonl``: translation pairs (a verse and the same verse in another language; half of
      them English <-> X, half X <-> Y) then cross-reference pairs (a verse and one cross-referenced verse,
      same translation).
    * ``stage2/xref.jsonl``: a verse -> all its cross-referenced verses, same translation.
    * ``stage2/xling.jsonl``: a verse in a non-English language -> its cross-references in English.
    * ``stage2/long.jsonl``: a verse -> its chapter with the verse cut out (MLDR-like). Each chapter serves
      one language only, and every query verse of a chapter is cut from it, so a chapter has one text.
    """
    langs = list(spec.train_languages)
    codes = {lang: [t.code for t in TRANSLATIONS if t.language == lang] for lang in langs}
    every = [c for lang in langs for c in codes[lang]]
    common = _common(bible, every, TRAIN_BOOKS)
    text = bible.verses
    targets = _targets(bible, TRAIN_BOOKS, common)
    foreign = [lang for lang in langs if lang != "en"]
    en_pairs = [("en", x) for x in foreign] if "en" in langs else []
    xy_pairs = [(x, y) for i, x in enumerate(foreign) for y in foreign[i + 1 :]]
    pairs = []
    for i, key in enumerate(_draw(sorted(common), spec.train_translation_pairs, rng)):
        a, b = rng.choice(en_pairs if (i % 2 == 0 and en_pairs) or not xy_pairs else xy_pairs)
        if rng.random() < 0.5:
            a, b = b, a
        ca, cb = rng.choice(codes[a]), rng.choice(codes[b])
        pairs.append(_line("translation", text[ca][key], [text[cb][key]], ca, cb))
    refs = [(s, d) for s in sorted(targets) for d in targets[s]]
    for src, dst in _draw(refs, spec.train_xref_pairs, rng):
        code = rng.choice(every)
        pairs.append(_line("xref", text[code][src], [text[code][dst]], code, code))
    xref = []
    for src in _draw(sorted(targets), spec.train_xref_lines, rng):
        code = rng.choice(every)
        xref.append(_line("xref", text[code][src], [text[code][d] for d in targets[src]], code, code))
    xling = []
    for src in _draw(sorted(targets), spec.train_xling_lines if foreign and "en" in langs else 0, rng):
        qc, pc = rng.choice(codes[rng.choice(foreign)]), rng.choice(codes["en"])
        xling.append(_line("xling", text[qc][src], [text[pc][d] for d in targets[src]], qc, pc))
    return {
        "stage1/pairs.jsonl": pairs,
        "stage2/xref.jsonl": xref,
        "stage2/xling.jsonl": xling,
        "stage2/long.jsonl": _long_lines(spec, bible, rng),
    }


def _long_lines(spec: BibleBenchSpec, bible: BibleText, rng: random.Random) -> list[dict]:
    by_chapter = _query_verses(bible, spec.mldr_languages, TRAIN_BOOKS, spec.min_query_words)
    order = sorted(by_chapter)
    rng.shuffle(order)
    owner = {ch: spec.mldr_languages[i % len(spec.mldr_languages)] for i, ch in enumerate(order)}
    chosen = _round_robin(by_chapter, spec.train_long_lines, "train_long_lines", rng)
    cut = set(chosen)
    chapters = {lang: _chapters(bible, PRIMARY[lang], TRAIN_BOOKS, cut) for lang in spec.mldr_languages}
    lines = []
    for key in chosen:
        lang = owner[key[:2]]
        qc, pc = SECOND.get(lang, PRIMARY[lang]), PRIMARY[lang]
        lines.append(_line("long", bible.verses[qc][key], [chapters[lang][key[:2]]], qc, pc))
    return lines
