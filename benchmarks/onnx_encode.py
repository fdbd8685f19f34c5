"""Encode on CPU: PyTorch (``M3Embedder``) vs ONNX Runtime fp32 vs int8 (``OnnxM3Embedder``), all three outputs.

    M3LIT_CACHE=... python -m benchmarks.onnx_encode [--quick] [--runs N] [--texts N] [--model NAME] [--beir DIR]

The model is multilingual-e5-small (``m3lit:multilingual-e5-small-q4``, resolved from ``$M3LIT_CACHE``)
with freshly initialised sparse and ColBERT heads (seed 0): it has no trained heads, and a head-less
folder is refused by the ONNX export, so it is saved once with its fresh heads
(:meth:`M3Model.save_pretrained`) and exported with ``format=onnx onnx_int8=true``, both cached under
``.cache/bench/onnx-<name>/``. The texts are the first ``--texts`` passages of a small BEIR folder (default:
the compact Bible benchmark's ``eval/miracl/en``, 2,033 passages, 100 queries; 200 passages with --quick),
with e5's ``passage: `` / ``query: `` prefixes; batch size 32, max length 512, dense + lexical weights +
ColBERT vectors, timed after a warm-up call on 64 passages.

Four sides in alternating rounds (:func:`benchmarks.harness.alternate`: round r runs them in order, the
next round in reverse), each run a fresh process: the fp32 GEMM peak (:func:`benchmarks.mfu.m3_peak`: the
best large matmul, and the rate of the encoder's own GEMM shapes at one batch of tokens), then the three
encoders. Per encoder: texts/s, tokens/s (special tokens included), GFLOP/s (the forward matmul FLOPs of
the texts at their real lengths, :func:`benchmarks.flops.encode_flops`, over the seconds) and its share of
the measured fp32 peak (best run against the best peak of the same run), and peak RSS (the harness's sample
of the child's RSS: the loader's imports, torch included, and the model; not ``ru_maxrss``, which a child
inherits from this parent, that built the export). Speed ratios against PyTorch: best against best, and
per round (run i of each side, alternated, so both saw the same machine load). Quality, from the first
round: each side's dense retrieval nDCG@10 on the folder (exact inner product over the passages; e5's usual
mean pooling is not used, m3lit's CLS vector is), and the dense cosine of every passage to ONNX fp32 (min
and mean). Writes ``bench_results/onnx_encode.json``.

On a loaded machine single runs mislead (the other processes take the cores of one side and not the other's):
compare only alternated rounds, on an idle machine.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import harness as H
from benchmarks.workload import cache_root

__all__ = ["SIDES", "encode_side", "prepare", "run", "main"]

MODEL = "m3lit:multilingual-e5-small-q4"
#: Side name -> how its model is loaded (see :func:`_load`).
SIDES = ("pytorch", "onnx fp32", "onnx int8")
#: The side that measures the GEMM peak, alternated with the encoders.
PEAK = "gemm peak"
BATCH_SIZE = 32
MAX_LENGTH = 512


def default_beir() -> Path:
    """The compact Bible benchmark's English MIRACL-like folder in m3lit's cache."""
    from m3lit.corpora.bible.build import COMPACT, default_bible_dir

    return default_bible_dir(COMPACT) / "eval" / "miracl" / "en"


def prepare(model: str = MODEL) -> dict[str, str]:
    """Folders of ``model`` with fresh heads (flag layout) and its ONNX export (+ int8), cached."""
    import torch

    from m3lit.export import export
    from m3lit.model import M3Model

    root = cache_root() / f"onnx-{model.replace(':', '-').replace('/', '-')}"
    torch_dir, onnx_dir = root / "torch", root / "onnx"
    if not (torch_dir / "colbert_linear.pt").is_file():
        torch.manual_seed(0)
        M3Model.from_pretrained(model).save_pretrained(torch_dir)
    if not (onnx_dir / "m3lit.json").is_file():
        export(torch_dir, onnx_dir, format="onnx", onnx_int8=True, overwrite=True)
    return {"torch_dir": str(torch_dir), "onnx_dir": str(onnx_dir)}


def _load(side: str, torch_dir: str, onnx_dir: str):
    if side == "pytorch":
        from m3lit.inference.embedder import M3Embedder

        return M3Embedder(torch_dir, devices="cpu", use_fp16=False)
    from m3lit.inference.onnx_runtime import OnnxM3Embedder

    return OnnxM3Embedder(onnx_dir, int8=side == "onnx int8")


def encode_side(
    side: str, torch_dir: str, onnx_dir: str, beir: str, n: int, quality_out: str | None = None
) -> dict:
    """Time one side's encode of the folder's first ``n`` passages (:func:`benchmarks.api_calls.timed_encode`);
    with ``quality_out``, also compute dense nDCG@10 over the whole folder and write the dense vectors of
    those ``n`` passages there (``.npy``)."""
    from benchmarks.api_calls import timed_encode
    from m3lit.retrieval import load_beir

    data = load_beir(beir)
    model = _load(side, torch_dir, onnx_dir)
    passages = ["passage: " + t for t in data.corpus_texts[:n]]
    result = timed_encode(model, passages, batch_size=BATCH_SIZE, max_length=MAX_LENGTH, warmup=64)
    if quality_out:
        result["ndcg@10"], docs = _dense_ndcg(model, data)
        np.save(quality_out, docs[:n])
    return result


def _dense_ndcg(model, data) -> tuple[float, np.ndarray]:
    """Dense retrieval nDCG@10 of ``model`` on ``data`` (exact inner product over every passage), and the
    (N, H) passage vectors."""
    from m3lit.retrieval import Ranking, evaluate_ranking
    from m3lit.retrieval.index.ranking import sort_rows

    kw = {"batch_size": BATCH_SIZE, "max_length": MAX_LENGTH}
    docs = model.encode(["passage: " + t for t in data.corpus_texts], **kw)["dense_vecs"]
    queries = model.encode(["query: " + t for t in data.query_texts], **kw)["dense_vecs"]
    scores = queries @ docs.T  # (Q, N)
    indices = np.broadcast_to(np.arange(docs.shape[0]), scores.shape)
    ranking = Ranking(*sort_rows(indices, scores, k=10))
    return evaluate_ranking(ranking, data.qrels, ["ndcg@10"]).values["ndcg@10"], docs


def run(
    quick: bool = False,
    runs: int | None = None,
    model: str = MODEL,
    beir: str | None = None,
    texts: int | None = None,
) -> dict:
    """Side-by-side ONNX encode benchmark; prints the table and writes ``bench_results/onnx_encode.json``."""
    runs = runs or (1 if quick else 3)
    beir = str(beir or default_beir())
    n = texts or (200 if quick else 2033)
    from transformers import AutoConfig

    folders = prepare(model)
    flops, tokens = _workload(folders["torch_dir"], beir, n)
    print(f"  onnx encode ({model}, {n} passages of {beir}: {flops / 1e9:.1f} GFLOP)", flush=True)
    shape = AutoConfig.from_pretrained(folders["torch_dir"])
    peak = H.m3_command(
        "benchmarks.mfu:m3_peak",
        hidden=shape.hidden_size,
        ffn=shape.intermediate_size,
        tokens=BATCH_SIZE * max(1, tokens // n),
    )
    with tempfile.TemporaryDirectory() as tmp:
        vectors = {side: str(Path(tmp) / f"{i}.npy") for i, side in enumerate(SIDES)}

        def side_fn(side):
            def call(r: int) -> H.RunResult:
                task = {"side": side, **folders, "beir": beir, "n": n}
                if r == 0:
                    task["quality_out"] = vectors[side]
                return H.run_subprocess(
                    H.m3_command("benchmarks.onnx_encode:encode_side", **task), timeout_s=1800
                )

            return call

        sides = {PEAK: lambda r: H.run_subprocess(peak, timeout_s=300)}
        sides.update({side: side_fn(side) for side in SIDES})
        results = H.alternate(sides, dict.fromkeys(sides, runs))
        dense = {side: np.load(path) for side, path in vectors.items() if Path(path).is_file()}
    return report(results, dense, quick, model, beir, n, folders, flops)


def _workload(torch_dir: str, beir: str, n: int) -> tuple[float, int]:
    """Forward matmul FLOPs of encoding the first ``n`` passages (real lengths, max 512) and their tokens."""
    from transformers import AutoConfig, AutoTokenizer

    from benchmarks.flops import EncoderShape, encode_flops
    from m3lit.retrieval import load_beir

    passages = ["passage: " + t for t in load_beir(beir).corpus_texts[:n]]
    tokenizer = AutoTokenizer.from_pretrained(torch_dir)
    lengths = [len(ids) for ids in tokenizer(passages, truncation=True, max_length=MAX_LENGTH)["input_ids"]]
    shape = EncoderShape.from_config(AutoConfig.from_pretrained(torch_dir))
    return encode_flops(shape, lengths), sum(lengths)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def report(results, dense, quick, model, beir, n, folders, flops) -> dict:
    """Print the table and write the JSON (see the module docstring)."""
    rows, summary = [], {}
    reference = dense.get("onnx fp32")
    peaks = [r.result for r in results[PEAK] if r.ok]
    peak = max((p["fp32"] for p in peaks), default=None)
    summary[PEAK] = {k: H.summarize([p.get(k) for p in peaks]) for k in ("fp32", "shape_fp32")}
    for side in SIDES:
        ok = [r for r in results[side] if r.ok]
        texts = H.summarize([r.result["texts"] / r.result["seconds"] for r in ok])
        tokens = H.summarize([r.result["tokens"] / r.result["seconds"] for r in ok])
        gflops = H.summarize([flops / r.result["seconds"] / 1e9 for r in ok])
        rss = H.summarize([r.sampled_peak_rss_mb for r in ok])  # ru_maxrss: the parent's (exec keeps it)
        ndcg = next((r.result["ndcg@10"] for r in ok if "ndcg@10" in r.result), None)
        cos = _cosines(dense[side], reference) if side in dense and reference is not None else None
        share = None if peak is None or gflops["max"] is None else gflops["max"] * 1e9 / peak
        entry = {"texts_per_s": texts, "tokens_per_s": tokens, "gflops_per_s": gflops, "peak_share": share}
        entry.update({"peak_rss_mb": rss, "ndcg@10": ndcg})
        if cos is not None:
            entry["dense_cosine_to_onnx_fp32"] = {"min": float(cos.min()), "mean": float(cos.mean())}
        summary[side] = entry
        rows.append(
            [
                side,
                H.fmt_range(texts, 1),
                H.fmt_range(tokens, 0),
                H.fmt_range(gflops, 1),
                "n/a" if share is None else f"{100 * share:.1f} %",
                H.fmt_range(rss, 0),
                "n/a" if cos is None else f"{cos.min():.4f} / {cos.mean():.4f}",
                "n/a" if ndcg is None else f"{ndcg:.4f}",
            ]
        )
    base = [r.result["texts"] / r.result["seconds"] for r in results["pytorch"] if r.ok]
    for side in SIDES[1:]:
        rates = [r.result["texts"] / r.result["seconds"] for r in results[side] if r.ok]
        summary[side]["speedup_over_pytorch"] = H.pair_ratios(rates, base)
        best = max(rates) / max(base) if rates and base else None
        summary[side]["best_over_best"] = best
        ratio = (
            "n/a"
            if best is None
            else f"best {best:.2f}; per round " + H.fmt_range(summary[side]["speedup_over_pytorch"], 2)
        )
        rows.append([f"{side} / pytorch", ratio, "", "", "", "", "", ""])
    failures = [f"{side}: {r.status}" for side in (PEAK, *SIDES) for r in results[side] if not r.ok]
    headers = ["encode (CPU)", "texts/s", "tokens/s", "GFLOP/s", "of fp32 peak (best)", "peak RSS MB"]
    headers += ["dense cos to fp32 (min / mean)", "nDCG@10"]
    peak_line = "n/a" if peak is None else f"{peak / 1e9:.1f} GFLOP/s"
    shape_line = H.fmt_range(summary[PEAK]["shape_fp32"], 1, 1e-9)
    print(
        f"\n### onnx encode (measured fp32 GEMM peak {peak_line}; the encoder's GEMM shapes {shape_line})\n"
        + H.format_table(headers, rows)
        + "".join(f"\nFAILED {f}" for f in failures)
    )
    onnx_dir = Path(folders["onnx_dir"])
    payload = {
        "benchmark": "onnx_encode", "quick": quick, "model": model, "beir": beir, "n_texts": n,
        "workload": {"batch_size": BATCH_SIZE, "max_length": MAX_LENGTH, "outputs": "dense+sparse+colbert",
                     "forward_flops": flops},
        "files_mb": {p.name: p.stat().st_size / 2**20 for p in sorted(onnx_dir.glob("*.onnx*"))},
        "provenance": json.loads((onnx_dir / "m3lit.json").read_text(encoding="utf-8")),
        "env": H.environment(), "summary": summary, "failures": failures, "runs": results,
    }  # fmt: skip
    H.save_json("onnx_encode", payload)
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help="model with an encoder (fresh heads are added)")
    parser.add_argument("--beir", default=None, help="BEIR folder (default: the compact Bible miracl/en)")
    parser.add_argument(
        "--texts", type=int, default=None, help="passages encoded (default 2033, --quick 200)"
    )
    args = parser.parse_args(argv)
    run(args.quick, args.runs, args.model, args.beir, args.texts)


if __name__ == "__main__":
    main()
