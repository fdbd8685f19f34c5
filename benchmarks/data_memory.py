"""Private memory of loading one training set as JSONL and as a ``datasets`` save_to_disk folder (m3lit[hf]).

    python -m benchmarks.data_memory [--rows 30000] [--out DIR]

Writes ``--rows`` synthetic rows (a 12-word query, one 70-word positive, seven 70-word negatives; about
3.4 kB a row) once as JSONL and once with ``Dataset.save_to_disk``, then validates each in its own process with
:func:`m3lit.data.streams.load_datasets` (what ``M3DataModule.setup`` does before token counting) and prints
the rows, the seconds and the growth of the process's anonymous resident memory (``RssAnon``: memory that a
memory map does not use). JSONL keeps every row as Python objects; the table keeps row indices only
(:mod:`m3lit.data.tables`).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main", "measure", "write_sets"]


def write_sets(out: Path, rows: int) -> dict[str, Path]:
    """The same ``rows`` synthetic rows as ``set.jsonl`` and as the save_to_disk folder ``set_disk``."""
    import datasets
    import pyarrow as pa

    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    data = [{"query": text(12), "pos": [text(70)], "neg": [text(70) for _ in range(7)]} for _ in range(rows)]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "set.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in data)
    datasets.Dataset(pa.Table.from_pylist(data)).save_to_disk(str(out / "set_disk"))
    return {"JSONL": out / "set.jsonl", "save_to_disk": out / "set_disk"}


def _anonymous_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(x for x in status if x.startswith("RssAnon"))
    return int(line.split()[1]) / 1024


def measure(path: str) -> dict:
    """Validate ``path`` as ``data.train_data`` in this process: rows, seconds, anonymous RSS growth (MiB)."""
    import datasets  # imported before the baseline for both forms

    from m3lit.data.schema import SkipReport
    from m3lit.data.streams import load_datasets

    before, start = _anonymous_mib(), time.perf_counter()
    (ds,) = load_datasets(
        path, group_size=8, on_bad_line="error", report=SkipReport(), use_teacher_scores=True
    )
    table = getattr(ds.examples, "table", None)
    return {
        "rows": len(ds),
        "seconds": round(time.perf_counter() - start, 2),
        "anonymous_mib": round(_anonymous_mib() - before, 1),
        "memory_mapped": table is not None and isinstance(table.data, datasets.table.MemoryMappedTable),
    }


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.data_memory", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rows", type=int, default=30000, help="rows of the synthetic set")
    parser.add_argument("--out", default=None, help="folder for the two sets (default: a temporary folder)")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # the worker: one path, JSON out
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        sets = write_sets(Path(args.out or tmp), args.rows)
        results = {}
        for name, path in sets.items():
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.data_memory", "--measure", str(path)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        size = sets["JSONL"].stat().st_size
    print(f"{args.rows} rows ({size / 2**20:.0f} MiB of JSONL)\n")
    print("| form | rows | seconds | anonymous RSS growth | memory-mapped |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['rows']} | {r['seconds']} | {r['anonymous_mib']} MiB | {r['memory_mapped']} |")
    return results


if __name__ == "__main__":
    main()
