"""Local copies of Hub dataset repositories in mteb's retrieval layout, for the paper-benchmark tests.

A repository is a folder with a ``README.md`` whose YAML front matter lists its configs (as the Hub's
parquet datasets do) and one parquet file per config and split: ``<lang>-corpus``, ``<lang>-queries`` and
``<lang>-qrels`` for a multilingual set, ``corpus``, ``queries`` and ``default`` (the qrels) for one
language. ``datasets.load_dataset`` reads such a folder exactly as it reads the Hub repository.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_repo(root: Path, configs: dict[str, dict[str, list[dict]]]) -> Path:
    """Write ``configs`` (config -> split -> rows) as a Hub-layout dataset repository at ``root``."""
    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            folder = root / config
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}-00000-of-00001.parquet")
            lines += [f"  - split: {split}", f"    path: {config}/{split}-*.parquet"]
    (root / "README.md").write_text("\n".join([*lines, "---", ""]), encoding="utf-8")
    return root


def retrieval_configs(prefix: str, corpus: list[dict], splits: dict[str, tuple[list[dict], list[dict]]]):
    """mteb's configs for one subset: ``prefix`` is ``"<lang>-"`` (or ``""`` for one language);
    ``splits`` maps a split to its (queries, qrels rows); the corpus is published under the first split."""
    first = next(iter(splits))
    return {
        f"{prefix}corpus": {first: corpus},
        f"{prefix}queries": {split: queries for split, (queries, _) in splits.items()},
        f"{prefix}qrels" if prefix else "default": {split: qrels for split, (_, qrels) in splits.items()},
    }


def write_mkqa_copy(root: Path, corpus: list[dict], questions: dict[str, list[dict]]) -> Path:
    """Local copies of ``mteb/nq`` (``corpus`` plus one test question) and of ``Shitao/bge-m3-data``'s
    ``MKQA_test-data.zip`` holding ``<lang>.jsonl`` per language (lines ``{"id", "question", "answers"}``)."""
    import json
    import zipfile

    nq = (
        [{"_id": "nq-q0", "text": "a question"}],
        [{"query-id": "nq-q0", "corpus-id": corpus[0]["_id"], "score": 1}],
    )
    write_repo(root / "mteb" / "nq", retrieval_configs("", corpus, {"test": nq}))
    archive = root / "Shitao" / "bge-m3-data" / "MKQA_test-data.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as bundle:
        for lang, rows in questions.items():
            bundle.writestr(f"{lang}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return root
