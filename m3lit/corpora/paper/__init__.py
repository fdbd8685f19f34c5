"""The paper's benchmarks (MIRACL, MKQA, MLDR, BEIR) built from the public Hub datasets into m3lit's suite layout.

``python -m m3lit.evaluate model=... suite=miracl|mkqa|mldr|beir:<name> languages=[...]`` builds the suite once
into the cache (:func:`build_paper_suite`) and evaluates it like any other suite folder. The dataset ids and
revisions are pinned in :mod:`m3lit.corpora.paper.catalog`; the reading is mteb's own Hub loader
(:mod:`m3lit.corpora.paper.build`), so the optional extra ``m3lit[mteb]`` is needed.
"""

from m3lit.corpora.paper.build import build_paper_suite, is_paper_benchmark
from m3lit.corpora.paper.catalog import BEIR_TASKS, BENCHMARKS, PaperBenchmark, paper_benchmark

__all__ = [
    "BEIR_TASKS",
    "BENCHMARKS",
    "PaperBenchmark",
    "build_paper_suite",
    "is_paper_benchmark",
    "paper_benchmark",
]
