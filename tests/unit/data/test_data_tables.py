"""Training data from ``datasets`` (parquet, Arrow, save_to_disk, a Hub-layout folder) equals the same JSONL rows.

Every fixture is written by the test into ``tmp_path``; nothing reaches the Hub.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from m3lit.config.paths import check_paths
from m3lit.data.datamodule import M3DataModule
from m3lit.data.entries import expand_train_data
from m3lit.files.errors import UsageError
from m3lit.files.jsonl import DataError

datasets = pytest.importorskip("datasets")  # the `hf` extra (in `dev`, so CI runs these)
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _rows(n: int = 40) -> list[dict]:
    """FlagEmbedding rows with teacher scores, prompts and varied lengths (several buckets)."""
    rows = []
    for i in range(n):
        words = " ".join(["word"] * (1 + (i * 5) % 19))
        rows.append(
            {
                "query": f"query {i} {words[: i % 7 * 5]}",
                "pos": [f"positive {i} {words}", f"second positive {i}"][: 1 + i % 2],
                "neg": [f"negative {i}.{j} {words[: j * 4]}" for j in range(2 + i % 3)],
                "pos_scores": [10.0 + i, 9.5][: 1 + i % 2],
                "neg_scores": [float(j) - i / 10 for j in range(2 + i % 3)],
                "prompt": f"prompt {i % 3}: " if i % 2 else None,
            }
        )
    return rows


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _parquet(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """``datasets`` writes its Arrow cache (Hub-layout loads, parquet conversions) under tmp_path, not home."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _forms(tmp_path: Path, rows: list[dict]) -> dict:
    """The same rows as every table source ``data.train_data`` takes."""
    table = pa.Table.from_pylist(rows)
    dataset = datasets.Dataset(table)
    dataset.save_to_disk(str(tmp_path / "disk"))
    datasets.DatasetDict({"train": dataset, "test": dataset.select(range(3))}).save_to_disk(
        str(tmp_path / "dict")
    )
    _parquet(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet", rows)
    _parquet(tmp_path / "repo" / "data" / "test-00000-of-00001.parquet", rows[:4])
    return {
        "parquet": _parquet(tmp_path / "set.parquet", rows),
        "arrow": str(next((tmp_path / "disk").glob("*.arrow"))),
        "save_to_disk": str(tmp_path / "disk"),
        "dataset_dict": {"path": str(tmp_path / "dict"), "split": "train"},
        "hub_layout": f"hf:{tmp_path / 'repo'}::train",
    }


def _module(tmp_path: Path, tokenizer, train_data, **kw) -> M3DataModule:
    options = {
        "train_data": train_data,
        "tokenizer": tokenizer,
        "train_group_size": 3,
        "query_max_len": 16,
        "passage_max_len": 32,
        "bucket_edges": [10, 16],
        "bucket_batch_sizes": [4, 3, 2],
        "cache_dir": str(tmp_path / "lengths"),
        "use_prompt": True,
        "seed": 11,
    }
    dm = M3DataModule.from_config(**{**options, **kw})
    dm.setup("fit")
    return dm


def _steps(dm: M3DataModule, steps: int) -> list[tuple]:
    """Every tensor of ``steps`` batches as bytes, with the example indices and the sampler position."""
    out = []
    for batch in dm.iter_batches(steps):
        tensors = [t for enc in batch.queries + batch.passages for t in (enc.input_ids, enc.attention_mask)]
        scores = batch.teacher_scores.numpy().tobytes() if batch.teacher_scores is not None else None
        meta = (batch.meta["epoch"], batch.meta["step"], batch.meta["dataset_index"], batch.meta["indices"])
        out.append(([t.numpy().tobytes() for t in tensors], scores, batch.group_size, meta))
    return out


@pytest.mark.parametrize("form", ["parquet", "arrow", "save_to_disk", "dataset_dict", "hub_layout"])
def test_a_table_gives_the_batches_of_the_same_jsonl_rows(tmp_path, tokenizer, hf_cache, form):
    rows = _rows()
    reference = _module(tmp_path, tokenizer, _jsonl(tmp_path / "set.jsonl", rows))
    table = _module(tmp_path, tokenizer, _forms(tmp_path, rows)[form])
    ref_sampler, sampler = reference.sources["labelled"].sampler, table.sources["labelled"].sampler
    assert len(sampler) == len(ref_sampler) > 3
    for epoch in (0, 1):  # the sampler's global order, chunk by chunk
        assert [(g, c.tolist()) for g, c in sampler.plan(epoch)] == [
            (g, c.tolist()) for g, c in ref_sampler.plan(epoch)
        ]
    steps = len(ref_sampler) + 2  # into the second epoch
    assert _steps(table, steps) == _steps(reference, steps)
    assert table.state_dict() == reference.state_dict()
    examples = table.sources["labelled"].datasets[0].examples
    assert isinstance(examples.table.data, datasets.table.MemoryMappedTable)  # rows stay on disk
    assert [ex.query for ex in examples] == [r["query"] for r in rows]


def test_ranks_and_resume_see_the_jsonl_batches(tmp_path, tokenizer, hf_cache):
    rows = _rows()
    path, jsonl = _forms(tmp_path, rows)["parquet"], _jsonl(tmp_path / "set.jsonl", rows)
    for rank in (0, 1):  # the shared seed: each rank of two draws the rows the JSONL rank draws
        ranked = {"rank": rank, "world_size": 2, "bucket_batch_sizes": [2, 2, 1]}
        assert _steps(_module(tmp_path, tokenizer, path, **ranked), 5) == _steps(
            _module(tmp_path, tokenizer, jsonl, **ranked), 5
        )
    whole = _module(tmp_path, tokenizer, path)
    first = _steps(whole, 3)
    state = whole.state_dict()
    rest = _steps(whole, 4)
    resumed = _module(tmp_path, tokenizer, path)
    resumed.load_state_dict(state)
    assert first and _steps(resumed, 4) == rest


def _sentence_transformers_rows(rows: list[dict]) -> list[dict]:
    """(anchor, positive, negative_1..3) with one positive, plus a column nobody reads."""
    return [
        {
            "id": i,
            "anchor": r["query"],
            "positive": r["pos"][0],
            **{f"negative_{j + 1}": r["neg"][j] for j in range(2)},
        }
        for i, r in enumerate(rows)
    ]


def test_a_column_mapping_trains_sentence_transformers_columns_unchanged(tmp_path, tokenizer, hf_cache):
    rows = _rows()
    flag_rows = [{"query": r["query"], "pos": r["pos"][:1], "neg": r["neg"][:2]} for r in rows]
    st_rows = _sentence_transformers_rows(rows)
    columns = {"query": "anchor", "pos": "positive", "neg": "negative_*"}
    reference = _steps(_module(tmp_path, tokenizer, _jsonl(tmp_path / "flag.jsonl", flag_rows)), 8)
    by_entry = {"path": _parquet(tmp_path / "st.parquet", st_rows), "columns": columns}
    assert _steps(_module(tmp_path, tokenizer, by_entry), 8) == reference
    listed = {"query": "anchor", "pos": ["positive"], "neg": ["negative_1", "negative_2"]}
    st_jsonl = _jsonl(tmp_path / "st.jsonl", st_rows)  # the mapping reads JSONL alike (data.columns)
    assert _steps(_module(tmp_path, tokenizer, st_jsonl, columns=listed), 8) == reference
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "lengths").glob("*.npz"))
    assert cached == ["flag", "st", "st"]  # one token-length cache per file and mapping
    again = _module(tmp_path, tokenizer, st_jsonl, columns={**listed, "neg": ["negative_2"]})
    assert (
        len(list((tmp_path / "lengths").glob("*.npz"))) == 4 and len(again.sources["labelled"].datasets) == 1
    )


def test_a_bad_row_is_named_by_dataset_split_row_and_field(tmp_path, tokenizer, hf_cache):
    rows = _rows(12)
    rows[7]["pos"] = ["fine", "  "]
    forms = _forms(tmp_path, rows)
    with pytest.raises(DataError) as caught:
        _module(tmp_path, tokenizer, forms["hub_layout"])
    assert str(caught.value) == f"hf:{tmp_path / 'repo'}::train:row 7: field 'pos[1]': empty passage"
    with pytest.raises(DataError) as caught:
        _module(tmp_path, tokenizer, forms["dataset_dict"])
    assert str(caught.value) == f"{tmp_path.name}/dict:train:row 7: field 'pos[1]': empty passage"
    st_rows = _sentence_transformers_rows(rows[:6])
    st_rows[4]["negative_2"] = ""
    mapped = {
        "path": _parquet(tmp_path / "st.parquet", st_rows),
        "columns": {"query": "anchor", "neg": "negative_*"},
    }
    with pytest.raises(DataError) as caught:
        _module(tmp_path, tokenizer, mapped)  # pos is unmapped and there is no pos column
    assert str(caught.value) == (
        f"{tmp_path.name}/st.parquet: field 'pos': no column (the columns are id, anchor, positive, negative_1, "
        "negative_2; map them with data.columns, e.g. {query: anchor, pos: positive})"
    )
    mapped["columns"]["pos"] = "positive"
    with pytest.raises(
        DataError, match=r"st\.parquet:row 4: field 'neg\[1\]': column 'negative_2': empty passage"
    ):
        _module(tmp_path, tokenizer, mapped)
    dm = _module(
        tmp_path,
        tokenizer,
        forms["parquet"],
        on_bad_line="skip",
        train_group_size=2,
        bucket_batch_sizes=[1, 1, 1],
    )
    (dataset,) = dm.sources["labelled"].datasets
    assert dataset.examples.lines.tolist() == [r for r in range(12) if r != 7]
    assert dm.skip_report.counts == {dataset.name: 1}
    assert dm.skip_report.examples[dataset.name] == [f"{dataset.name}:row 7: field 'pos[1]': empty passage"]


def test_unknown_split_config_or_column_mapping_is_one_clear_error(tmp_path, tokenizer, hf_cache):
    forms = _forms(tmp_path, _rows(6))
    with pytest.raises(DataError, match=r"dict:dev: no split 'dev' \(the splits are test, train\)"):
        _module(tmp_path, tokenizer, {"path": str(tmp_path / "dict"), "split": "dev"})
    with pytest.raises(DataError, match=r"::validation: cannot load: .*validation"):
        _module(tmp_path, tokenizer, forms["hub_layout"].replace("::train", "::validation"))
    with pytest.raises(DataError, match="split applies only to hf: ids and save_to_disk folders"):
        expand_train_data({"path": forms["parquet"], "split": "train"})
    with pytest.raises(DataError, match=r"and its split='test' disagree"):
        expand_train_data({"path": forms["hub_layout"], "split": "test"})
    with pytest.raises(UsageError, match=r"data.columns.question: unknown field"):
        expand_train_data(forms["parquet"], columns={"question": "anchor"})
    with pytest.raises(UsageError, match=r"data.columns.query: holds one value"):
        expand_train_data(forms["parquet"], columns={"query": ["a", "b"]})
    with pytest.raises(
        UsageError, match=r"data.columns.question: unknown field"
    ):  # at start-up, by the CLI check
        check_paths({"data": {"train_data": forms["parquet"], "columns": {"question": "anchor"}}})


def test_hub_spelling_names_repository_config_split_and_revision():
    (entry,) = expand_train_data("hf:org/set@v1.0:en:dev")
    assert (entry.kind, entry.repo, entry.revision, entry.config, entry.split) == (
        "hub",
        "org/set",
        "v1.0",
        "en",
        "dev",
    )
    assert entry.name == "hf:org/set@v1.0:en:dev"
    (default,) = expand_train_data({"path": "hf:org/set", "config": "fr"})
    assert (default.config, default.split, default.revision, default.name) == (
        "fr",
        "train",
        None,
        "hf:org/set:fr:train",
    )
    first, second = expand_train_data(["hf:org/set::train", "hf:org/set:fr"])
    assert first.path.parent == second.path.parent  # one repository: one "folder" for small-set merging


def test_jsonl_needs_no_datasets_and_a_table_names_the_extra(tmp_path, tokenizer, monkeypatch):
    path = _jsonl(tmp_path / "set.jsonl", _rows(12))
    parquet = _parquet(tmp_path / "set.parquet", _rows(12))
    for name in [m for m in sys.modules if m == "datasets" or m.startswith("datasets.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed: import fails, find_spec is None
    assert len(_steps(_module(tmp_path, tokenizer, path), 3)) == 3
    with pytest.raises(UsageError, match=r"pip install 'm3lit\[hf\]'"):
        expand_train_data([path, parquet])


def test_small_tables_merge_like_small_files(tmp_path, tokenizer, hf_cache):
    rows = _rows(30)
    folder = tmp_path / "mixed"
    _parquet(folder / "a.parquet", rows[:5])
    _jsonl(folder / "b.jsonl", rows[5:9])
    _parquet(folder / "c.parquet", rows[9:])
    dm = _module(tmp_path, tokenizer, str(folder), small_threshold=10, bucket_batch_sizes=[2, 2, 2])
    names = [ds.name for ds in dm.sources["labelled"].datasets]
    assert names == ["mixed/merged(2 files)", "mixed/c.parquet"]
    merged = dm.sources["labelled"].datasets[0]
    assert [ex.query for ex in merged.examples] == [r["query"] for r in rows[:9]]
    assert np.array_equal(dm.sources["labelled"].datasets[1].examples.lines, np.arange(21))
