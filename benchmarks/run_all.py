"""Run every benchmark and print every table: ``make bench`` (= ``python -m benchmarks.run_all``).

    python -m benchmarks.run_all [--quick] [--runs N] [--flag] [--only train,score] [--skip eval]

Order: score, encode, train, memory, eval, mfu, gpu (each ``python -m benchmarks.<name>`` on its own; gpu
is :mod:`benchmarks.mfu`'s GPU mode, ``--points``, and only does something on a CUDA machine). Every
module writes ``bench_results/<name>.json``; at the end the tables are printed together and
``bench_results/README_table.md`` (the README "Performance" table, :mod:`benchmarks.report`) is rendered
from the JSON just written.

The FlagEmbedding side (issue 6's optional side-by-side mode) runs with ``--flag`` (``make bench-flag``)
when ``.venv-flag`` exists, on CPU. m3lit alone (``make bench``) took 12.6 minutes on the idle
2-core machine, side by side 18.3 (FlagEmbedding's training steps take 15 s each, its in-batch sparse
scatter 16 s); ``--quick`` a minute or two. (Each module run alone, ``python -m benchmarks.<name>``,
includes the FlagEmbedding side whenever it is installed, unless ``--no-flag``.)
"""

from __future__ import annotations

import contextlib
import io
import sys
import time

from benchmarks import harness as H

__all__ = ["BENCHMARKS", "main"]

BENCHMARKS = ("score", "encode", "train", "memory", "eval", "mfu", "gpu")


def _run_one(name: str, quick: bool, runs: int | None, flag: bool, with_encode: bool = False) -> None:
    if name == "score":
        from benchmarks import score

        score.run(quick=quick, runs=runs, flag=flag, encode=with_encode)
    elif name == "encode":
        from benchmarks import encode

        encode.run(quick=quick, runs=runs, flag=flag)
    elif name == "train":
        from benchmarks import train

        train.run(quick=quick, runs=runs, flag=flag)
    elif name == "memory":
        from benchmarks import memory

        memory.run(quick=quick, runs=None, flag=flag)
    elif name == "eval":
        from benchmarks import eval as eval_bench

        eval_bench.run(quick=quick, runs=runs)
    elif name == "mfu":
        from benchmarks import mfu

        mfu.run(quick=quick, runs=runs)
    elif name == "gpu":
        _gpu_mode(quick, runs)
    else:
        raise ValueError(f"unknown benchmark {name!r}; choose from {BENCHMARKS}")


def _gpu_mode(quick: bool, runs: int | None) -> None:
    """``benchmarks.mfu``'s GPU mode on the base shape at the paper's points; a no-op without CUDA."""
    import os

    import torch

    from benchmarks import mfu

    if (
        not torch.cuda.is_available() and os.environ.get("M3LIT_BENCH_GPU_ON_CPU") != "1"
    ):  # =1: CPU smoke test
        print("\n### gpu\nno CUDA device: GPU mode skipped (run on a machine with a GPU)")
        return
    mfu.run(quick=quick, runs=runs or 1, model="base", points=[(256, 8), (1024, 4)] if quick else mfu.POINTS)


class _Tee(io.TextIOBase):
    """Copy stdout into a buffer so the tables can be printed again at the end."""

    def __init__(self, stream) -> None:
        self.stream, self.buffer_text = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.buffer_text.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma list of benchmarks to run (default: all)")
    parser.add_argument("--skip", default="", help="comma list of benchmarks to skip")
    parser.add_argument("--flag", action="store_true", help="also run the FlagEmbedding side (if installed)")
    args = parser.parse_args(argv)
    chosen = [
        b for b in (args.only.split(",") if args.only else BENCHMARKS) if b and b not in args.skip.split(",")
    ]
    unknown = [b for b in chosen if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    flag = args.flag and H.want_flag(args)
    print(
        f"m3lit benchmarks: {', '.join(chosen)}{' (quick)' if args.quick else ''}; FlagEmbedding side: {'on' if flag else 'off'}"
    )
    tee = _Tee(sys.stdout)
    start, failed = time.perf_counter(), []
    with contextlib.redirect_stdout(tee):
        # score's worker processes also run the encode measurement when both are chosen (one start-up)
        merged = "score" in chosen and "encode" in chosen
        for name in [b for b in chosen if not (merged and b == "encode")]:
            t0 = time.perf_counter()
            try:
                _run_one(name, args.quick, args.runs, flag, with_encode=merged)
            except Exception as error:  # one broken benchmark must not hide the others' tables
                failed.append(f"{name}: {type(error).__name__}: {error}")
                print(f"\n### {name}\nFAILED: {type(error).__name__}: {error}")
            print(f"  ({name}: {time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    tables = [line for line in tee.buffer_text.getvalue().splitlines() if not line.startswith("  ")]
    print("\n" + "=" * 100 + "\nAll tables\n" + "\n".join(tables))
    from benchmarks import report

    path = report.write_readme_table()
    print(f"\nREADME table: {path}\ntotal {time.perf_counter() - start:.0f} s")
    if failed:
        print("FAILED: " + "; ".join(failed))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
