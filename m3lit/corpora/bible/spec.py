"""The Bible benchmark's shape: the book ranges of its split and :class:`BibleBenchSpec`, every size of a build.

:mod:`m3lit.corpora.bible.tasks` draws the content of a spec and :mod:`m3lit.corpora.bible.build` writes it;
both import this module, which imports neither. The presets: :data:`COMPACT` (``make train``) and
:data:`FULL` (``make train-full``), by name in :data:`SPECS` (the corpus option ``spec``).
"""

from __future__ import annotations

from dataclasses import dataclass

from m3lit.corpora.bible.source import LANGUAGES

__all__ = [
    "COMPACT",
    "FULL",
    "GOSPELS",
    "REST_OF_NT",
    "SPECS",
    "TASKS",
    "TEST_BOOKS",
    "TRAIN_BOOKS",
    "BibleBenchSpec",
]

#: Inclusive book ranges: Old Testament for training, New Testament for evaluation.
TRAIN_BOOKS: tuple[int, int] = (1, 39)
TEST_BOOKS: tuple[int, int] = (40, 66)
#: The calibration case (:mod:`m3lit.corpora.bible.calibration`): Gospel queries, Acts-Revelation corpus.
GOSPELS: tuple[int, int] = (40, 43)
REST_OF_NT: tuple[int, int] = (44, 66)

#: The three task families, in table order: MIRACL-like, MKQA-like, MLDR-like.
TASKS = ("miracl", "mkqa", "mldr")


@dataclass(frozen=True)
class BibleBenchSpec:
    """Every size of a build: the single source of the benchmark's shape (book ranges are inclusive)."""

    name: str  # preset name; part of the default folder name
    eval_books: tuple[int, int]  # NT books whose verses form the MIRACL/MKQA corpora and queries
    miracl_languages: tuple[str, ...]  # monolingual task languages
    miracl_queries: int  # queries per language (the same verses in every language)
    mkqa_languages: tuple[str, ...]  # query languages of the cross-lingual task (corpus: English)
    mkqa_queries: int  # queries per language
    mldr_books: tuple[int, int]  # NT books whose chapters form the MLDR corpus
    mldr_languages: tuple[str, ...]  # long-document languages (also those of train/stage2/long.jsonl)
    mldr_queries: int  # queries per language, one per chapter while chapters last
    train_languages: tuple[str, ...]  # languages of the translation/cross-reference training lines
    train_translation_pairs: int  # stage-1 lines: the same OT verse in two languages
    train_xref_pairs: int  # stage-1 lines: an OT verse and one cross-reference
    train_xref_lines: int  # stage-2 lines: an OT verse -> all its cross-references, same translation
    train_xling_lines: int  # stage-2 lines: an OT verse in X -> its cross-references in English
    train_long_lines: int  # stage-2 lines: an OT verse -> its chapter with the verse cut out
    dev_queries: int = 0  # MIRACL/MKQA-like dev queries per language, not test queries (qrels/dev.tsv)
    mldr_dev_queries: int = 0  # MLDR-like dev queries per language (their verses are cut out too)
    min_query_words: int = 6  # MLDR and long-document query verses need this many words in each translation
    seed: int = 16  # seeds every sample (random.Random)

    def __post_init__(self) -> None:
        for field in ("eval_books", "mldr_books"):
            lo, hi = getattr(self, field)
            if not TEST_BOOKS[0] <= lo <= hi <= TEST_BOOKS[1]:
                raise ValueError(
                    f"BibleBenchSpec.{field}={(lo, hi)} must lie within the New Testament {TEST_BOOKS}"
                )
        for field in ("miracl_languages", "mkqa_languages", "mldr_languages", "train_languages"):
            if bad := [lang for lang in getattr(self, field) if lang not in LANGUAGES]:
                raise ValueError(f"BibleBenchSpec.{field}: unknown language(s) {bad}; known: {LANGUAGES}")
        if "en" in self.mkqa_languages:
            raise ValueError(
                "BibleBenchSpec.mkqa_languages: the MKQA-like corpus is English; query languages are the others"
            )


FULL = BibleBenchSpec(
    name="full",
    eval_books=TEST_BOOKS,
    miracl_languages=LANGUAGES[:8],  # en es fr it de ar ru fa: 8 corpora of 7,957 verses (~4 min each on CPU)
    miracl_queries=300,
    mkqa_languages=LANGUAGES[1:],
    mkqa_queries=300,
    dev_queries=300,  # fusion weights are chosen on these (evaluate.tune_fusion)
    mldr_books=TEST_BOOKS,
    mldr_languages=("en", "fr", "de", "ru"),
    mldr_queries=150,
    mldr_dev_queries=150,  # 110 chapters without a test query, then a second verse of 40 that have one
    train_languages=LANGUAGES,
    train_translation_pairs=20000,
    train_xref_pairs=6000,
    train_xref_lines=4000,
    train_xling_lines=4000,
    train_long_lines=2000,
)
#: A cut for a 10-minute CPU demo: Paul's letters (books 45-57, Romans to Philemon: 2,033 verses, 87 chapters)
#: for every task.
COMPACT = BibleBenchSpec(
    name="compact",
    eval_books=(45, 57),
    miracl_languages=("en", "fr"),
    miracl_queries=100,
    mkqa_languages=("fr", "es"),
    mkqa_queries=100,
    dev_queries=100,
    mldr_books=(45, 57),
    mldr_languages=("en",),
    mldr_queries=60,
    mldr_dev_queries=60,
    train_languages=("en", "fr", "es"),
    train_translation_pairs=800,
    train_xref_pairs=200,
    train_xref_lines=400,
    train_xling_lines=300,
    train_long_lines=300,
)
SPECS = {"compact": COMPACT, "full": FULL}
