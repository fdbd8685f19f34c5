"""GPU checks of ``M3Embedder``: fp32/fp16/bf16 against CPU fp32, real out-of-memory back-off, throughput.

Run on a CUDA machine (m3lit needs no install: ``PYTHONPATH=.``)::

    PYTHONPATH=. python benchmarks/inference_gpu.py --out bench_results/inference_gpu.json

1. Two random XLM-R models with m3lit's offline tokenizer: ``tiny`` (hidden 64, 2 layers) and ``base``
   (hidden 768, 12 layers, 12 heads, the XLM-R base shape with a small vocabulary).
2. For each: encode the same texts with ``M3Embedder`` on CPU fp32 (reference) and on the GPU in fp32,
   fp16 and bf16; report the largest absolute difference of dense vectors, lexical weights, ColBERT
   vectors and ``compute_score`` values, and check the outputs are float32 arrays.
3. Out-of-memory back-off: with most of the GPU memory held by a dummy tensor, encode long texts with
   ``batch_size`` far too large; the batch size must shrink (x3/4 steps) and the vectors must equal an
   encoding with a small batch.
4. Throughput: passages/s of ``encode`` (dense + sparse + ColBERT, 512-token cap) in fp16.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.flag_parity import corpus  # noqa: E402
from m3lit import M3Embedder  # noqa: E402
from m3lit.model import M3Model  # noqa: E402
from m3lit.model.tiny import tiny_xlmr_config  # noqa: E402
from m3lit.model.tiny_tokenizer import build_tokenizer  # noqa: E402

SHAPES = {
    "tiny": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128},
    "base": {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072},
}


def build(folder: Path, shape: dict, tokenizer) -> str:
    torch.manual_seed(0)
    config = tiny_xlmr_config(len(tokenizer), max_length=512, **shape)
    M3Model.from_config(config, tokenizer).save_pretrained(folder)
    return str(folder)


def outputs(emb: M3Embedder, texts: list[str], pairs: list[tuple[str, str]]) -> dict:
    out = emb.encode(texts, batch_size=16, max_length=256, return_sparse=True, return_colbert_vecs=True)
    scores = emb.compute_score(
        pairs, batch_size=16, max_passage_length=256, weights_for_different_modes=[0.4, 0.2, 0.4]
    )
    assert out["dense_vecs"].dtype == np.float32 and all(v.dtype == np.float32 for v in out["colbert_vecs"])
    return {**out, "scores": scores}


def max_diffs(a: dict, b: dict) -> dict[str, float]:
    lexical = max(
        abs(float(x.get(k, 0.0)) - float(y.get(k, 0.0)))
        for x, y in zip(a["lexical_weights"], b["lexical_weights"], strict=True)
        for k in set(x) | set(y)
    )
    return {
        "dense": float(np.abs(a["dense_vecs"] - b["dense_vecs"]).max()),
        "lexical": lexical,
        "colbert": max(
            float(np.abs(x - y).max()) for x, y in zip(a["colbert_vecs"], b["colbert_vecs"], strict=True)
        ),
        "compute_score": max(
            float(np.abs(np.subtract(a["scores"][k], b["scores"][k])).max()) for k in a["scores"]
        ),
    }


def oom_backoff(path: str, long_texts: list[str]) -> dict:
    emb = M3Embedder(path, use_fp16=True, devices="cuda")
    small = emb.encode(long_texts, batch_size=32, max_length=512)["dense_vecs"]
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(max(0, free - (3 << 30)), dtype=torch.uint8, device="cuda")  # leave ~3 GiB
    try:
        from m3lit.inference.encoding import encode_texts

        result = encode_texts(emb._replica("cuda"), long_texts, batch_size=len(long_texts), max_length=512)
    finally:
        del hog
        torch.cuda.empty_cache()
    return {
        "texts": len(long_texts),
        "requested_batch_size": len(long_texts),
        "final_batch_size": result.batch_size,
        "max_abs_diff_vs_batch_32": float(np.abs(result.dense - small).max()),
    }


def throughput(emb: M3Embedder, texts: list[str], repeats: int = 3) -> dict:
    emb.encode(texts[:256], batch_size=256, return_sparse=True, return_colbert_vecs=True)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        emb.encode(texts, batch_size=256, max_length=512, return_sparse=True, return_colbert_vecs=True)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return {"texts": len(texts), "seconds": round(best, 3), "texts_per_s": round(len(texts) / best, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-speed", type=int, default=5000)
    parser.add_argument("--out", default="bench_results/inference_gpu.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    torch.set_num_threads(8)
    tokenizer = build_tokenizer(corpus(400) * 2, vocab_size=2000)
    texts = corpus(48)
    pairs = [(" ".join(t.split()[:8]), texts[(i * 7 + 3) % len(texts)]) for i, t in enumerate(texts)]
    long_texts = [" ".join(corpus(60)[i:] + corpus(60)[:i]) for i in range(1024)]
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in SHAPES.items():
            path = build(Path(tmp) / name, shape, tokenizer)
            reference = outputs(M3Embedder(path, use_fp16=False, devices="cpu"), texts, pairs)
            entry = {}
            for label, kwargs in {
                "fp32": {"use_fp16": False},
                "fp16": {"use_fp16": True},
                "bf16": {"use_bf16": True},
            }.items():
                entry[label] = max_diffs(
                    outputs(M3Embedder(path, devices="cuda", **kwargs), texts, pairs), reference
                )
                print(
                    f"{name:5s} {label}: " + ", ".join(f"{k} {v:.2e}" for k, v in entry[label].items()),
                    flush=True,
                )
            entry["throughput_fp16"] = throughput(
                M3Embedder(path, use_fp16=True, devices="cuda"), corpus(args.n_speed)
            )
            print(f"{name:5s} throughput fp16: {entry['throughput_fp16']}", flush=True)
            if name == "base":
                entry["oom_backoff"] = oom_backoff(path, long_texts)
                print(f"{name:5s} OOM back-off: {entry['oom_backoff']}", flush=True)
            report[name] = entry
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
