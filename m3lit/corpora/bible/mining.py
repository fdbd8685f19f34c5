"""Hard negatives for the Bible benchmark's stage-2 files, mined with the starting model (spec §4.3).

:func:`mine_bible_negatives` runs :func:`m3lit.corpora.mining.mine_hard_negatives` over each raw file of
``<build>/train/stage2/`` and writes ``<build>/train/stage2-mined-<model>-<hash>/`` (atomically, with a manifest of
settings and sha256). Lines are mined per ``pos_translation`` group, each group against its own passages: a
pool that mixed translations would offer the positive's own translation (in another language, or another
English version) as a "negative". Output lines keep the input order.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from m3lit.files.cache import cached_build
from m3lit.files.jsonl import read_records, write_jsonl

__all__ = ["mine_bible_negatives", "mined_dir"]


def mined_dir(
    build_dir: str | Path,
    model_name_or_path: str | Path,
    variant: dict | None = None,
    files: Sequence[str] | None = None,
) -> Path:
    """``<build>/train/stage2-mined-<model name>-<8 hex>``: the hex digest of the model reference (a local path
    made absolute) keeps two models with the same folder name (e.g. two runs' ``export/``) apart. A non-empty
    ``variant`` (the filter settings) appends ``-f<6 hex>`` of its JSON, so filtered and plain files coexist;
    ``files`` (a subset of the stage-2 stems; None = all) appends ``-<stem>+<stem>``, so subsets coexist."""
    ref = str(model_name_or_path)
    if Path(ref).exists():
        ref = str(Path(ref).resolve())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(model_name_or_path)).name).strip("-") or "model"
    name = f"stage2-mined-{slug}-{hashlib.sha1(ref.encode()).hexdigest()[:8]}"
    if variant:
        name += "-f" + hashlib.sha1(json.dumps(variant, sort_keys=True).encode()).hexdigest()[:6]
    if files:
        name += "-" + "+".join(sorted(files))
    return Path(build_dir) / "train" / name


def mine_bible_negatives(
    build_dir: str | Path,
    model_name_or_path: str | Path,
    *,
    out: str | Path | None = None,
    rank_range: tuple[int, int] = (10, 210),
    negative_number: int = 7,
    batch_size: int = 64,
    query_max_len: int = 128,
    passage_max_len: int = 256,
    long_passage_max_len: int = 1024,
    seed: int = 42,
    device: str | None = None,
    force: bool = False,
    model=None,
    candidates: str = "dense",
    filters=None,
    files: Sequence[str] | None = None,
) -> Path:
    """Mine negatives for the ``train/stage2/*.jsonl`` files of a finished build; return the output folder.

    Args:
        build_dir: a folder written by :func:`m3lit.corpora.bible.build.build_bible_bench`.
        model_name_or_path: the starting model (:meth:`M3Model.from_pretrained`); names the output folder.
        out: output folder (None: :func:`mined_dir`). Reused when its manifest has the same settings, unless ``force``.
        rank_range / negative_number / seed: as in :func:`mine_hard_negatives` (ranks ``[lo, hi)``).
        batch_size / query_max_len / device: encoding settings.
        passage_max_len: passage truncation for verse files; ``long_passage_max_len`` for ``long.jsonl``.
        model: an already loaded :class:`~m3lit.model.M3Model` to use instead of loading the path.
        candidates / filters: as in :func:`mine_hard_negatives` (``dense`` and no filter: the benchmark's files).
        files: stems of the stage-2 files to mine (each is mined on its own, so a file's negatives do not
            depend on which others are mined); None: all. A subset gets a folder of its own
            (:func:`mined_dir`), and the list is part of the folder's settings.
    """
    source = Path(build_dir) / "train" / "stage2"
    every = sorted(source.glob("*.jsonl"))
    if not every:
        raise FileNotFoundError(
            f"{source}: no stage-2 .jsonl files; build the benchmark first (build_bible_bench)"
        )
    wanted = sorted(set(files)) if files is not None else [p.stem for p in every]
    absent = sorted(set(wanted) - {p.stem for p in every})
    if absent:
        raise FileNotFoundError(f"{source}: no stage-2 file {absent} (have {[p.stem for p in every]})")
    subset = None if len(wanted) == len(every) else wanted
    files = [source / f"{stem}.jsonl" for stem in wanted]
    variant = _variant(candidates, filters)
    out = Path(out) if out is not None else mined_dir(build_dir, model_name_or_path, variant, subset)
    settings = {"rank_range": list(rank_range), "negative_number": negative_number, "seed": seed,
                "query_max_len": query_max_len, "passage_max_len": passage_max_len,
                "long_passage_max_len": long_passage_max_len, **variant}  # fmt: skip
    settings["files"] = wanted
    mining = {"candidates": candidates, "filters": filters}
    encoding = {"batch_size": batch_size, "device": device}

    def build(tmp: Path) -> dict:
        import torch

        # A starting model without heads gets fresh ones, drawn from the global generator: fork it, so that a
        # run which mines first trains the same model as a run which reuses the mined files.
        with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory(dir=tmp) as scratch:
            loaded = model
            if loaded is None:
                from m3lit.model import M3Model

                loaded = M3Model.from_pretrained(model_name_or_path)
            filtered = {}
            for path in files:
                passage_len = long_passage_max_len if path.stem == "long" else passage_max_len
                rows, filtered[path.name] = _mine_file(
                    loaded, path, Path(scratch), settings, {**encoding, **mining}, passage_len
                )
                write_jsonl(tmp / path.name, rows)
        entries = {"model": str(model_name_or_path), "source": "train/stage2"}
        return {**entries, "filtered": filtered} if variant.get("filters") else entries

    # mined with other settings: mined again (the old folder replaced only once finished)
    cached_build(out, {"settings": settings}, build, force=force, files=[p.name for p in files])
    return out


def _variant(candidates: str, filters) -> dict:
    """The manifest settings that differ from the benchmark's plain mining (empty when none does)."""
    variant = {} if candidates == "dense" else {"candidates": candidates}
    if filters is not None and filters.names:
        variant["filters"] = {name: getattr(filters, name) for name in filters.names}
    return variant


def _mine_file(
    model, path: Path, scratch: Path, settings: dict, options: dict, passage_max_len: int
) -> tuple[list[dict], dict]:
    """The lines of one stage-2 file with mined ``neg``, in input order, and the filters' counts summed over
    its ``pos_translation`` groups; each group is mined against its own passages (module docstring)."""
    from m3lit.corpora.mining import mine_hard_negatives

    rows = [row for _, row in read_records(path)]
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row["pos_translation"], []).append(i)
    counts = {"considered": 0, "removed": 0, "removed_by": {}}
    for code, members in sorted(groups.items()):
        raw, mined = scratch / f"{code}.in.jsonl", scratch / f"{code}.out.jsonl"
        write_jsonl(raw, (rows[i] for i in members))
        result = mine_hard_negatives(
            model, raw, mined, rank_range=tuple(settings["rank_range"]), negative_number=settings["negative_number"],
            seed=settings["seed"], query_max_len=settings["query_max_len"], passage_max_len=passage_max_len,
            **options,
        )  # fmt: skip
        counts["considered"] += result.considered
        counts["removed"] += result.removed
        for name, n in result.removed_by.items():
            counts["removed_by"][name] = counts["removed_by"].get(name, 0) + n
        for i, (_, row) in zip(members, read_records(mined), strict=True):
            rows[i] = row
    return rows, counts
