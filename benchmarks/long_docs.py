"""Long documents: stage-2 training steps and MCLS encoding with passages of 1k-8192 tokens (issue 14).

    python -m benchmarks.long_docs [--quick] [--runs N] [--lengths 1024,2048,4096,8192] [--batch B]
                                   [--group G] [--hidden 128 --layers 2 --heads 2 --ffn 256 --vocab 0]

A randomly initialised XLM-R-shaped encoder (default 2 layers, hidden 128, 2 heads, FFN 256, the offline
tokenizer's vocabulary; ``--vocab 250002`` for XLM-R's) is built with 514 positions and extended to 8194
(512 -> 8192 tokens, :func:`m3lit.model.positions.extend_position_embeddings`, as BGE-M3 did, paper
App. B.1). m3lit's real training path (:func:`benchmarks.train.m3_train`) then runs unified fine-tuning +
self-distillation steps (the stage-2 loss, §3.3) with queries of 64 tokens and passages of exactly each
length, gradient checkpointing on, the exact gradient cache (``model.sub_batch_mode=gradcache``) and the
sub-batch size chosen by length (``data.sub_batch_size=auto``: 1 row at >= 6000 tokens, spec §4.5).

Per length, one fresh subprocess per run records peak RSS (``ru_maxrss``; peak allocated GPU memory on
CUDA), s/step and tokens/s (real tokens, after a warm-up step). Which SDPA kernel the encoder's attention
runs (flash / efficient / math / cudnn) is read from a profiled forward pass with a padded row, as in
training (:func:`sdpa_kernels`). Memory growth is reported two ways per doubling of the length: the peak
ratio (<= 2 for any growth up to linear) and the ratio of marginal MB per token (about 1 when growth is
linear, about 2 when the (L x L) attention matrix is materialised). Finally ``M3Embedder.encode`` runs on
8192-token passages with one CLS (ordinary) and with MCLS (a CLS every 256 tokens, App. B.2), time and
peak RSS each. Results: the table on stdout and ``bench_results/long_docs.json``.
"""

from __future__ import annotations

from benchmarks import harness as H
from benchmarks.train import m3_overrides, step_stats
from benchmarks.workload import ModelSpec, get_tokenizer, model_dir, train_jsonl, write_texts

__all__ = [
    "KERNELS", "LENGTHS", "growth", "long_model", "long_step_overrides", "main", "run", "sdpa_kernels",
    "without_attention_dropout",
]  # fmt: skip

LENGTHS = (1024, 2048, 4096, 8192)
QUERY_LEN = 64
#: Longest input after extension (XLM-R: 8194 position rows = 8192 tokens + the padding offset of 2).
EXTENDED_LENGTH = 8192
#: Profiler operator name fragment -> SDPA kernel (first match wins).
KERNELS = (
    ("flash_attention", "flash"),
    ("efficient_attention", "efficient"),
    ("cudnn_attention", "cudnn"),
    ("attention_math", "math"),
)


def long_model(spec: ModelSpec) -> str:
    """Folder of the random encoder of ``spec`` (built at 512 tokens) with positions extended to 8192."""
    return str(model_dir(spec, extend_to=EXTENDED_LENGTH))


def sdpa_kernels(overrides: list[str], length: int = 512) -> dict:
    """The attention kernels a training forward pass runs, from the profiler's operator names.

    The model is built from the run's own config (``overrides``, so CPU dropout and checkpointing are as in
    training), in train mode, on two rows of ``length`` tokens, the second half padding (the key-padding
    mask of a training batch), on the benchmark device under its autocast. Returns ``{"kernels": [...],
    "ops": [...], "attn_implementation": ...}``; ``"explicit"`` means no SDPA operator ran (m3lit's CPU
    dropout attention, :func:`m3lit.model.cpu_dropout.attention`, which builds the (L x L) scores),
    ``"math"`` that PyTorch's composite SDPA ran (it materialises them too).
    """
    import torch
    from hydra.utils import instantiate

    from benchmarks.device import autocast, bench_device
    from m3lit.config.compose import compose

    device = bench_device()
    model = instantiate(compose(overrides).model).model.to(device).train()
    ids = torch.randint(5, len(model.tokenizer), (2, length), device=device)
    mask = torch.ones_like(ids)
    mask[1, length // 2 :] = 0
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof, autocast(device):
        model.encode_hidden(ids, mask).sum().backward()
    ops = sorted({e.name for e in prof.events() if "attention" in e.name or "scaled_dot" in e.name})
    kernels = sorted({kernel for op in ops for key, kernel in KERNELS if key in op}) or ["explicit"]
    return {"kernels": kernels, "ops": ops, "attn_implementation": model.encoder.config._attn_implementation}


def without_attention_dropout(folder: str) -> str:
    """A copy of model ``folder`` with ``attention_probs_dropout_prob = 0`` (weights linked, not copied).

    On CPU, PyTorch's fused flash-attention kernel runs only without attention dropout; this variant shows
    what the attention's memory does then."""
    import json
    import os
    from pathlib import Path

    src, dst = Path(folder), Path(folder + "-noattndrop")
    if (dst / "config.json").exists():
        return str(dst)
    dst.mkdir(exist_ok=True)
    for item in src.iterdir():
        if item.name != "config.json" and not (dst / item.name).exists():
            os.symlink(item.resolve(), dst / item.name)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    config["attention_probs_dropout_prob"] = 0.0
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return str(dst)


def long_step_overrides(
    folder: str, length: int, *, batch: int, group: int, steps: int, sub_batch_size: str | int = "auto"
) -> list[str]:
    """Config overrides of stage-2 steps at passage length ``length`` with checkpointing + gradient cache."""
    data = str(
        train_jsonl(
            2 * batch, query_tokens=QUERY_LEN + 16, passage_tokens=length + 16, n_neg=group - 1, seed=14
        )
    )
    return m3_overrides(
        folder, data, stage="unified_self_distill", batch_size=batch, group_size=group, query_max_len=QUERY_LEN,
        passage_max_len=length, steps=steps, sub_batch_mode="gradcache", sub_batch_size=sub_batch_size,
        gradient_checkpointing=True,
    )  # fmt: skip


def growth(lengths: list[int], peaks: list[float]) -> list[dict]:
    """Per consecutive pair of lengths: the peak ratio, MB per extra token, and (from the second pair on)
    that slope over the previous pair's: about 1 for linear growth, about 2 per doubling for quadratic.

    >>> [round(g["marginal_ratio"], 2) for g in growth([1, 2, 4], [100.0, 110.0, 130.0])[1:]]  # linear
    [1.0]
    >>> growth([1, 2, 4], [100.0, 110.0, 150.0])[1]["marginal_ratio"]  # quadratic-like
    2.0
    """
    out, prev_slope = [], None
    pairs = list(zip(lengths, peaks, strict=True))
    for (l0, p0), (l1, p1) in zip(pairs, pairs[1:], strict=False):
        slope = (p1 - p0) / (l1 - l0)
        entry = {"from": l0, "to": l1, "peak_ratio": p1 / p0, "mb_per_token": slope}
        if prev_slope is not None:
            entry["marginal_ratio"] = slope / prev_slope if prev_slope > 0 else None
        out.append(entry)
        prev_slope = slope
    return out


def run(
    quick: bool = False,
    runs: int | None = None,
    lengths: list[int] | None = None,
    batch: int = 1,
    group: int = 2,
    spec: ModelSpec | None = None,
    encode_texts: int = 4,
    no_attention_dropout: bool = True,
) -> dict:
    """Steps per length (as configured, and without attention dropout), kernels, CLS/MCLS encoding;
    table + ``bench_results/long_docs.json``."""
    runs = runs or 1
    lengths = lengths or ([256, 512] if quick else list(LENGTHS))
    spec = spec or ModelSpec(vocab_size=0, hidden_size=128, num_layers=2, num_heads=2, intermediate_size=256)
    get_tokenizer()
    folder = long_model(spec)
    variants = {"dropout 0.1": folder}
    if no_attention_dropout:
        variants["attention dropout 0"] = without_attention_dropout(folder)
    steps = 2 if quick else 3  # the first is the warm-up
    sides = {}
    for variant, path in variants.items():
        o = long_step_overrides(path, min(lengths), batch=batch, group=group, steps=steps)
        sides[f"kernels {variant}"] = lambda r, o=o: H.run_subprocess(
            H.m3_command("benchmarks.long_docs:sdpa_kernels", overrides=o, length=min(lengths)), timeout_s=300
        )
        for length in lengths:
            o = long_step_overrides(path, length, batch=batch, group=group, steps=steps)
            sides[f"step {length} {variant}"] = lambda r, o=o: H.run_subprocess(
                H.m3_command("benchmarks.train:m3_train", overrides=o, warmup_steps=1), timeout_s=1800
            )
    enc_len = max(lengths)
    texts = str(write_texts(f"long-{encode_texts}x{enc_len}", [enc_len - 2] * encode_texts, seed=14))
    for name, interval in (("encode CLS", None), ("encode MCLS", 256)):
        task = dict(
            model_dir=folder, texts=texts, batch_size=1, max_length=enc_len, warmup=1, mcls_interval=interval
        )
        sides[f"{name} {enc_len}"] = lambda r, t=task: H.run_subprocess(
            H.m3_command("benchmarks.encode:m3_encode", **t), timeout_s=1800
        )
    print(f"  long_docs ({spec.num_layers} x {spec.hidden_size})", flush=True)
    results = H.alternate(sides, dict.fromkeys(sides, runs))
    summary: dict = {}
    rows, notes = [], []
    for variant in variants:
        found = [r.result for r in results[f"kernels {variant}"] if r.ok]
        kernels = found[0] if found else {"kernels": [], "failure": results[f"kernels {variant}"][0].status}
        summary[f"kernels {variant}"] = kernels
        for length in lengths:
            res = results[f"step {length} {variant}"]
            ok = [r for r in res if r.ok]
            entry = {
                **step_stats(res), **H.peak_memory(res),
                "tokens_per_step": ok[0].result["tokens_per_step"][:1] if ok else [],
            }  # fmt: skip
            summary[f"step {length} {variant}"] = entry
            rows.append([f"stage-2 step, passages {length}, {variant}", ", ".join(kernels["kernels"]) or "n/a",
                         H.fmt_range(entry["step_s"], 2), H.fmt_range(entry["tokens_per_s"], 0),
                         H.fmt_range(entry["peak_mb"], 0), "; ".join(entry["failures"])])  # fmt: skip
        peaks = [summary[f"step {n} {variant}"]["peak_mb"]["median"] for n in lengths]
        summary[f"growth {variant}"] = growth(lengths, peaks) if None not in peaks else []
        for g in summary[f"growth {variant}"]:
            marginal = f", marginal x{g['marginal_ratio']:.2f}" if g.get("marginal_ratio") else ""
            notes.append(f"{variant}: {g['from']} -> {g['to']}: peak x{g['peak_ratio']:.2f}, "
                         f"{g['mb_per_token']:.3f} MB per extra token{marginal}")  # fmt: skip
    for name in ("encode CLS", "encode MCLS"):
        res = results[f"{name} {enc_len}"]
        ok = [r for r in res if r.ok]
        entry = {
            "seconds": H.summarize([r.result["seconds"] for r in ok]),
            "passages_per_s": H.summarize([r.result["texts"] / r.result["seconds"] for r in ok]),
            "peak_mb": H.peak_memory(res)["peak_mb"],
            "failures": [r.status for r in res if not r.ok],
        }
        summary[f"{name} {enc_len}"] = entry
        rows.append([f"{name}, {encode_texts} passages of {enc_len}", "", H.fmt_range(entry["seconds"], 2) + " s total",
                     H.fmt_range(entry["passages_per_s"], 2) + " passages/s", H.fmt_range(entry["peak_mb"], 0),
                     "; ".join(entry["failures"])])  # fmt: skip
    table = (
        f"\n### long_docs ({spec.num_layers} x {spec.hidden_size}, positions extended to {EXTENDED_LENGTH}; "
        f"batch {batch}, group {group}, query {QUERY_LEN}; checkpointing + gradient cache)\n"
    )
    headers = ["run (median (min-max))", "attention kernel", "s/step", "tokens/s", "peak MB", "failures"]
    table += H.format_table(headers, rows) + "".join(f"\n{n}" for n in notes)
    print(table)
    payload = {
        "benchmark": "long_docs", "quick": quick, "model_spec": spec.__dict__, "extended_to": EXTENDED_LENGTH,
        "lengths": lengths, "batch": batch, "group": group, "query_max_len": QUERY_LEN,
        "env": H.environment(False), "summary": summary, "runs": results,
    }  # fmt: skip
    H.save_json("long_docs", payload)
    return payload


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> None:
    parser = H.bench_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--lengths", type=_ints, default=None, help="passage lengths (default 1024,2048,4096,8192)"
    )
    parser.add_argument("--batch", type=int, default=1, help="queries per step")
    parser.add_argument(
        "--group", type=int, default=2, help="passages per query (1 positive + G-1 negatives)"
    )
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--ffn", type=int, default=256)
    parser.add_argument(
        "--vocab", type=int, default=0, help="0: the offline tokenizer's 8,000; 250002: XLM-R's"
    )
    parser.add_argument("--encode-texts", type=int, default=4, help="passages encoded at the longest length")
    parser.add_argument("--no-variant", action="store_true", help="skip the runs without attention dropout")
    args = parser.parse_args(argv)
    spec = ModelSpec(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
                     num_heads=args.heads, intermediate_size=args.ffn)  # fmt: skip
    run(
        args.quick,
        args.runs,
        args.lengths,
        args.batch,
        args.group,
        spec,
        args.encode_texts,
        not args.no_variant,
    )


if __name__ == "__main__":
    main()
