"""m3lit benchmarks: training speed and memory, scoring and encoding throughput, evaluation time, MFU.

Each module is runnable on its own (``python -m benchmarks.<name> [--quick]``); ``python -m
benchmarks.run_all`` (``make bench``) runs them all, prints every table and writes JSON to
``bench_results/``. Every measurement runs in a fresh subprocess (clean peak RSS); when FlagEmbedding is
installed in ``.venv-flag`` the same workload also runs through it, alternating runs, and the tables give
the ratios m3lit / FlagEmbedding. ``benchmarks/README.md`` lists every script: what it measures, its
command, its runtime and where its output goes.
"""
