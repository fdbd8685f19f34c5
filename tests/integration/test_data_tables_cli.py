"""``python -m m3lit.train`` on training data from ``datasets`` (unit tests: tests/unit/data/test_data_tables.py).

A run trains on a parquet file of sentence-transformers columns (mapped) and a local folder in the Hub's
layout (``hf:``); a bad row and an unreachable Hub id each stop the run with one ``error:`` line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_utils import run_train_cli, tiny_corpus, tiny_run_overrides

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("datasets")  # the `hf` extra (in `dev`)


def _tables(tmp_path: Path, corpus: dict[str, str]) -> tuple[Path, Path]:
    """The tiny corpus's labelled rows as a parquet of (anchor, positive, negative_1..3), and its pairs in a
    local folder laid out as a Hub dataset repository."""
    rows = [json.loads(line) for line in Path(corpus["train"]).read_text(encoding="utf-8").splitlines()]
    triplets = [
        {
            "anchor": r["query"],
            "positive": r["pos"][0],
            **{f"negative_{j + 1}": n for j, n in enumerate(r["neg"])},
        }
        for r in rows
    ]
    parquet = tmp_path / "triplets.parquet"
    pq.write_table(pa.Table.from_pylist(triplets), parquet)
    repo = tmp_path / "pairs-repo"
    (repo / "data").mkdir(parents=True)
    pairs = [{"query": r["query"], "pos": r["pos"]} for r in rows]
    pq.write_table(pa.Table.from_pylist(pairs), repo / "data" / "train-00000-of-00001.parquet")
    return parquet, repo


def _overrides(corpus, run: Path, *extra: str) -> list[str]:
    base = [
        o
        for o in tiny_run_overrides(corpus, run)
        if not o.startswith(("data.train_data=", "data.pairs_data="))
    ]
    return [*base, "trainer.max_steps=4", "export=false", *extra]


def _run(overrides: list[str], tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))  # not the user's cache
    return run_train_cli(overrides, timeout=400)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_train_reads_a_mapped_parquet_and_a_hub_layout_folder(tmp_path, tokenizer, monkeypatch):
    corpus = tiny_corpus(tmp_path / "corpus", tokenizer)
    parquet, repo = _tables(tmp_path, corpus)
    run = tmp_path / "run"
    done = _run(
        _overrides(
            corpus,
            run,
            f'data.train_data={{path:"{parquet}",columns:{{query:anchor,pos:positive,neg:"negative_*"}}}}',
            f'data.pairs_data="hf:{repo}::train"',
            "callbacks.stage_switch.schedule={0:{stage:dense,source:pairs},2:{stage:unified,source:labelled}}",
        ),
        tmp_path,
        monkeypatch,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    log = done.stdout + done.stderr
    assert "source 'pairs': 1 file(s)" in log and "source 'labelled': 1 file(s)" in log
    assert "data source: pairs -> labelled" in log  # both table sources were trained on


def test_a_bad_row_or_an_unreachable_hub_id_stops_with_one_line(tmp_path, tokenizer, monkeypatch):
    corpus = tiny_corpus(tmp_path / "corpus", tokenizer)
    parquet, repo = _tables(tmp_path, corpus)
    table = pq.read_table(parquet).to_pylist()
    table[5]["positive"] = " "
    pq.write_table(pa.Table.from_pylist(table), parquet)
    mapping = "data.columns={query:anchor,pos:positive,neg:[negative_1,negative_2,negative_3]}"
    bad = _run(
        _overrides(
            corpus, tmp_path / "bad", f"data.train_data={parquet}", f"data.pairs_data={parquet}", mapping
        ),
        tmp_path,
        monkeypatch,
    )
    where = f"{tmp_path.name}/triplets.parquet"
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert _error_lines(bad.stderr) == [
        f"error: {where}:row 5: field 'pos[0]': column 'positive': empty passage"
    ], bad.stderr[-2000:]
    assert not list((tmp_path / "bad").rglob("*.ckpt"))
    offline = _run(
        _overrides(
            corpus, tmp_path / "hub", "data.train_data=hf:org/missing-set", f"data.pairs_data=hf:{repo}"
        ),
        tmp_path,
        monkeypatch,
    )
    assert offline.returncode == 1 and "Traceback" not in offline.stderr
    (line,) = _error_lines(offline.stderr)
    assert (
        line.startswith("error: hf:org/missing-set::train: cannot load: ") and "org/missing-set" in line[40:]
    )


def test_the_memory_benchmark_runs_at_toy_size(tmp_path, capsys):
    from benchmarks.data_memory import main

    results = main(["--rows", "300", "--out", str(tmp_path / "sets")])
    assert {name: (r["rows"], r["memory_mapped"]) for name, r in results.items()} == {
        "JSONL": (300, False),
        "save_to_disk": (300, True),
    }
    assert "| save_to_disk | 300 |" in capsys.readouterr().out
