"""Peak memory and time of the sparse (lexical) score, m3lit vs the reference's vocabulary scatter.

    .venv/bin/python -m benchmarks.sparse_memory                 # CPU, peak RSS
    .venv/bin/python -m benchmarks.sparse_memory --device cuda   # GPU, peak allocated CUDA memory
    .venv/bin/python -m benchmarks.sparse_memory --quick         # smaller sweep, one timing run

Workload (issue 2's "Done when"): V = 250002 (XLM-R), 8 queries of 64 tokens against 64 passages of 512
tokens, per-token weights w = ReLU(x) with a leaf x, ids drawn from a Zipf law over the vocabulary (as words
are: shared and repeated tokens, many distinct ids per passage), then InfoNCE at temperature 0.02 over the (8, 64) score matrix (groups of 8) and
backward to x. Two methods, each in a FRESH subprocess (:mod:`benchmarks.worker`), same seed, same inputs:

* ``m3lit``: :func:`m3lit.scores.sparse_scores` (vocabulary of the ids present on the smaller side, no
  (B, L, V) or (B, V) tensor).
* ``scatter``: the reference's training path (spec §1.3): zeros (B, L, V), scatter w into column id, max over
  L, zero the special-token columns, then q_vec @ p_vec.T. Written here from the spec, not copied.

Memory: on CPU the peak resident set size (``ru_maxrss``, which counts every page torch allocates and
touches) of the worker, and the part of it added by the measured steps (peak minus the RSS just before the
first step, inputs already built); on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation just
before the first step. The scatter path is skipped with a reason when its predicted peak (about
2 x 4 B x B x L x V per side) does not fit in the memory available; a sweep over shorter passages shows how
it grows. Both methods also report the sum of the scores and of x's gradient, which must agree.

Writes ``bench_results/sparse_memory.json`` (``sparse_memory_cuda.json`` with ``--device cuda``).
"""

from __future__ import annotations

import resource
import statistics
import time

import psutil

from benchmarks import harness as H

__all__ = ["measure", "run", "main"]

VOCAB = 250002
SPECIAL_IDS = (0, 1, 2, 3)  # XLM-R <s>, <pad>, </s>, <unk>: the benchmark's ids follow XLM-R
GROUP = 8
TEMPERATURE = 0.02
#: The scatter path runs only when its predicted peak fits in this fraction of the free memory (shared machines).
MEMORY_FRACTION = 0.5


# ----------------------------------------------------------------------------------- worker side
def _inputs(rows: int, length: int, vocab: int, seed: int, device):
    import torch

    g = torch.Generator().manual_seed(seed)
    ranks = torch.arange(vocab - 4, dtype=torch.float64)
    zipf = (ranks + 10).pow(-1.1)  # word frequencies: a few ids are everywhere, most are rare
    ids = 4 + torch.multinomial(zipf, rows * length, replacement=True, generator=g).view(rows, length)
    ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
    logits = torch.randn(rows, length, generator=g)
    return ids.to(device), logits.to(device).requires_grad_(True)


def _m3lit_scores(q_ids, q_x, p_ids, p_x):
    import torch

    from m3lit.scores import sparse_scores

    special = torch.tensor(SPECIAL_IDS, device=q_ids.device)
    q_w = torch.relu(q_x) * ~torch.isin(q_ids, special)  # what SparseHead does per token
    p_w = torch.relu(p_x) * ~torch.isin(p_ids, special)
    return sparse_scores(q_w, q_ids, p_w, p_ids)


def _scatter_scores(q_ids, q_x, p_ids, p_x, vocab: int):
    import torch

    def vocab_vectors(ids, x):
        weights = torch.relu(x).unsqueeze(-1)  # (B, L, 1)
        full = torch.zeros(*ids.shape, vocab, dtype=weights.dtype, device=ids.device)  # (B, L, V)
        full = torch.scatter(full, -1, ids.unsqueeze(-1), weights)
        pooled = torch.max(full, dim=1).values  # (B, V)
        pooled[:, list(SPECIAL_IDS)] *= 0.0
        return pooled

    return vocab_vectors(q_ids, q_x) @ vocab_vectors(p_ids, p_x).T


def measure(
    method: str,
    n_queries: int = 8,
    q_len: int = 64,
    n_passages: int = 64,
    p_len: int = 512,
    vocab: int = VOCAB,
    device: str = "cpu",
    repeats: int = 3,
) -> dict:
    """One method's forward + backward, ``repeats`` times, in this (fresh) process; see the module docstring."""
    import torch
    import torch.nn.functional as F

    dev = torch.device(device)
    q_ids, q_x = _inputs(n_queries, q_len, vocab, seed=1, device=dev)
    p_ids, p_x = _inputs(n_passages, p_len, vocab, seed=2, device=dev)
    targets = torch.arange(n_queries, device=dev) * (n_passages // n_queries)

    def step():
        if method == "m3lit":
            scores = _m3lit_scores(q_ids, q_x, p_ids, p_x)
        elif method == "scatter":
            scores = _scatter_scores(q_ids, q_x, p_ids, p_x, vocab)
        else:
            raise ValueError(f"unknown method {method!r}")
        loss = F.cross_entropy(scores / TEMPERATURE, targets)
        q_x.grad = p_x.grad = None
        loss.backward()
        return scores.detach()

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before_rss = psutil.Process().memory_info().rss / 2**20
    before_gpu = torch.cuda.memory_allocated() / 2**20 if dev.type == "cuda" else 0.0
    times, scores = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        scores = step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {
        "method": method,
        "shape": [n_queries, q_len, n_passages, p_len, vocab],
        "device": device,
        "rss_before_mb": before_rss,
        "peak_delta_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before_rss,
        "times_s": times,
        "score_sum": float(scores.double().sum()),
        "grad_sum": float(q_x.grad.double().sum() + p_x.grad.double().sum()),
    }
    if dev.type == "cuda":
        result["peak_delta_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20 - before_gpu
    return result


# ----------------------------------------------------------------------------------- parent side
def predicted_scatter_gb(n_queries: int, q_len: int, n_passages: int, p_len: int, vocab: int) -> float:
    """Rough peak of the scatter path: the zeros and the scattered copy (2 x B*L*V fp32 per side), the
    larger side dominating; the backward's (B, L, V) gradient reuses freed blocks."""
    return (
        2 * 4 * vocab * max(n_queries * q_len, n_passages * p_len) / 2**30
        + 4 * 4 * vocab * n_queries * q_len / 2**30
    )


def available_gb(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free / 2**30
    return psutil.virtual_memory().available / 2**30


def run(
    device: str = "cpu",
    quick: bool = False,
    runs: int | None = None,
    lengths: list[int] | None = None,
    memory_fraction: float = MEMORY_FRACTION,
) -> dict:
    """Measure both methods at the issue's size and over a sweep of passage lengths; print and save."""
    lengths = lengths or ([8, 512] if quick else [8, 32, 128, 512])
    repeats = runs or (1 if quick else 3)
    free = available_gb(device)
    rows, records = [], []
    for p_len in lengths:
        shape = {"n_queries": 8, "q_len": 64, "n_passages": 64, "p_len": p_len, "vocab": VOCAB}
        need = predicted_scatter_gb(**shape)
        for method in ("m3lit", "scatter"):
            if method == "scatter" and need > memory_fraction * free:
                status, res = f"skipped: needs ~{need:.1f} GiB, {free:.1f} GiB available", None
            else:
                steps = 1 if method == "scatter" and need > 2 else repeats  # one step is enough for a giant
                argv = H.m3_command(
                    "benchmarks.sparse_memory:measure", method=method, device=device, repeats=steps, **shape
                )
                res = H.run_subprocess(argv, timeout_s=900)
                status = res.status
            result = res.result if res is not None and res.ok else {}
            records.append(
                {"method": method, **shape, "status": status, "predicted_scatter_gib": need, **result}
            )
            rows.append(_row(method, shape, status, result, device))
            print(H.format_table(HEADERS, rows[-1:]).splitlines()[-1], flush=True)
    payload = {
        "benchmark": "sparse_memory",
        "environment": H.environment(),
        "device": device,
        "available_gib_at_start": free,
        "memory_fraction": memory_fraction,
        "records": records,
    }
    name = "sparse_memory" if device == "cpu" else f"sparse_memory_{device.split(':')[0]}"
    path = H.save_json(name, payload)
    print()
    print(H.format_table(HEADERS, rows))
    print(f"\nJSON: {path}")
    return payload


HEADERS = [
    "method",
    "passages x tokens",
    "status",
    "peak MB",
    "added by step MB",
    "fwd+bwd s (median)",
    "score sum",
    "grad sum",
]


def _row(method: str, shape: dict, status: str, result: dict, device: str) -> list[str]:
    size = f"{shape['n_passages']} x {shape['p_len']}"
    if not result:
        return [method, size, status, "-", "-", "-", "-", "-"]
    if device.startswith("cuda"):
        peak, added = "-", f"{result['peak_delta_gpu_mb']:.1f} (GPU)"
    else:
        peak, added = f"{result['peak_rss_mb']:.0f}", f"{result['peak_delta_rss_mb']:.1f}"
    return [
        method,
        size,
        "ok",
        peak,
        added,
        f"{statistics.median(result['times_s']):.3f}",
        f"{result['score_sum']:.4f}",
        f"{result['grad_sum']:.4f}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])  # --quick: two passage lengths, one timed step
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="passage lengths to sweep")
    parser.add_argument(
        "--memory-fraction",
        type=float,
        default=MEMORY_FRACTION,
        help="run the scatter path only if its predicted peak fits in this fraction of the free memory",
    )
    args = parser.parse_args(argv)
    run(
        args.device,
        quick=args.quick,
        runs=args.runs,
        lengths=args.lengths,
        memory_fraction=args.memory_fraction,
    )


if __name__ == "__main__":
    main()
