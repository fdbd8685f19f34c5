"""How many mined negatives the false-negative filters drop on the Bible benchmark (m3lit.corpora.mining).

Run::

    python -m benchmarks.mining_filters [--spec compact] [--model m3lit:multilingual-e5-small-q4] \\
        [--max-score 0.95] [--absolute-margin 0.05] [--relative-margin 0.05] [--candidates dense] [--files a,b]

Mines the benchmark's stage-2 files as ``corpus=bible`` does (per ``pos_translation`` group, ranks 10-210,
7 negatives per line, the starting model) once with every given filter on, and prints per file the rank-range
candidates the filters saw and how many each filter rejects (each filter's count is its own: a candidate may
fail several; ``removed`` counts it once). With ``--files xling,xref`` (the files ``make train`` trains on) the
mined folder is the one ``make train`` with the same ``corpus.mine_filter`` settings reuses
(``m3lit.corpora.bible.mining.mined_dir``); by default all three files are mined, into a folder of their own.
"""

from __future__ import annotations

import argparse
import json
import time

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="compact")
    parser.add_argument("--model", default="m3lit:multilingual-e5-small-q4")
    parser.add_argument("--candidates", default="dense", choices=["dense", "sparse", "all"])
    parser.add_argument("--max-score", type=float, default=0.95)
    parser.add_argument("--absolute-margin", type=float, default=0.05)
    parser.add_argument("--relative-margin", type=float, default=0.05)
    parser.add_argument(
        "--files", default=None, help="comma list of stage-2 stems (default: all, long included)"
    )
    args = parser.parse_args(argv)

    from m3lit.corpora.bible.build import build_bible_bench
    from m3lit.corpora.bible.mining import mine_bible_negatives
    from m3lit.corpora.bible.spec import SPECS
    from m3lit.corpora.mining import NegativeFilters
    from m3lit.files.cache import read_manifest

    filters = NegativeFilters(args.max_score, args.absolute_margin, args.relative_margin)
    paths = build_bible_bench(SPECS[args.spec], verbose=True)
    start = time.perf_counter()
    files = args.files.split(",") if args.files else None
    folder = mine_bible_negatives(
        paths.root, args.model, candidates=args.candidates, filters=filters, files=files
    )
    seconds = time.perf_counter() - start
    filtered = read_manifest(folder)["filtered"]
    names = filters.names
    print(f"| file | lines x 7 | candidates | removed | {' | '.join(names)} |")
    print("|---" * (4 + len(names)) + "|")
    for name, counts in filtered.items():
        lines = len((folder / name).read_text(encoding="utf-8").splitlines())
        by = " | ".join(str(counts["removed_by"][n]) for n in names)
        print(f"| {name} | {lines * 7} | {counts['considered']} | {counts['removed']} | {by} |")
    summary = {"folder": str(folder), "seconds": round(seconds, 1), "filters": {n: getattr(filters, n) for n in names},
               "candidates": args.candidates, "filtered": filtered}  # fmt: skip
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
