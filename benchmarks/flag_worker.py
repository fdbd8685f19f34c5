"""FlagEmbedding side of the side-by-side benchmarks. Runs in FlagEmbedding's own environment.

    .venv-flag/bin/python benchmarks/flag_worker.py '{"task": "train", "kwargs": {...}}'
    .venv-flag/bin/python benchmarks/flag_worker.py '{"tasks": [{"task": ..., "kwargs": ...}, ...]}'

FlagEmbedding 1.4.2 needs transformers 4.x, m3lit needs 5.x, so this script never imports m3lit (nor the
rest of ``benchmarks`` but :mod:`benchmarks.worker`, whose :func:`~benchmarks.worker.serve` runs the tasks and
prints the ``BENCH_RESULT {json}`` line, and :func:`benchmarks.api_calls.timed_encode`, code that drives
either library, and the rest of :mod:`benchmarks.api_calls`): standard library, torch, numpy and FlagEmbedding.

Tasks:
    versions: installed versions.
    train: FlagEmbedding's trainer through its module entry point
        (``python -m FlagEmbedding.finetune.embedder.encoder_only.m3 ... --use_cpu True``), timed per step
        by a callback added to the trainer it builds.
    encode: ``BGEM3FlagModel(path, devices='cpu', use_fp16=False).encode`` with all three outputs
        (:func:`benchmarks.api_calls.timed_encode`, as m3lit's side).
    rerank: ``compute_lexical_matching_score`` + ``colbert_score`` for every (query, candidate) pair.
    compute_score: ``BGEM3FlagModel.compute_score`` on (query, passage) pairs.
    parity: :func:`benchmarks.api_calls.run_api` on ``BGEM3FlagModel`` (fp32, CPU), saved with
        :func:`benchmarks.api_calls.save_results` for ``tests/integration/test_flag_parity.py``.
    inbatch: the training-time sparse and ColBERT score matrices (forward + backward) of
        ``EncoderOnlyEmbedderM3Model`` in training mode, on given hidden states.
"""

from __future__ import annotations

import json
import os
import sys
import time

if sys.path and os.path.basename(sys.path[0] or "") == "benchmarks":
    sys.path[0] = os.path.dirname(sys.path[0])  # the repository, not benchmarks/*.py shadowing packages

from benchmarks.api_calls import run_api, save_results, timed_encode  # noqa: E402
from benchmarks.worker import serve  # noqa: E402


def task_versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("FlagEmbedding", "transformers", "torch")}


def _counting_tokens(collate, tokens: list[int]):
    """``collate`` that also appends each batch's real (unpadded) query + passage tokens to ``tokens``."""

    def wrapped(features):
        batch = collate(features)
        total = 0
        for key in ("queries", "passages"):
            parts = batch[key] if isinstance(batch[key], list) else [batch[key]]
            total += sum(int(p["attention_mask"].sum()) for p in parts)
        tokens.append(total)
        return batch

    return wrapped


def task_train(
    model_dir: str,
    train_data: str,
    output_dir: str,
    warmup_steps: int = 1,
    steps: int = 3,
    batch_size: int = 8,
    group_size: int = 4,
    query_max_len: int = 64,
    passage_max_len: int = 256,
    unified: bool = True,
    self_distill: bool = True,
    temperature: float = 0.02,
    sub_batch_size: int | None = None,
    gradient_checkpointing: bool = False,
    seed: int = 42,
) -> dict:
    """FlagEmbedding's m3 trainer through its module entry point on CPU, timed per step by a callback;
    ``warmup_steps`` untimed steps first. Returns step times, warm-up times and real tokens per step."""
    import runpy
    import shutil

    import torch
    from FlagEmbedding.finetune.embedder.encoder_only.m3 import runner as m3_runner
    from transformers import TrainerCallback

    marks: list[float] = []
    tokens: list[int] = []

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

    original = m3_runner.EncoderOnlyEmbedderM3Runner.load_trainer

    def load_trainer(self):
        trainer = original(self)
        trainer.add_callback(StepTimer())
        trainer.data_collator = _counting_tokens(trainer.data_collator, tokens)
        return trainer

    m3_runner.EncoderOnlyEmbedderM3Runner.load_trainer = load_trainer
    argv = [
        "--model_name_or_path", model_dir, "--train_data", train_data, "--output_dir", output_dir,
        "--train_group_size", str(group_size), "--query_max_len", str(query_max_len),
        "--passage_max_len", str(passage_max_len), "--per_device_train_batch_size", str(batch_size),
        "--max_steps", str(warmup_steps + steps), "--learning_rate", "1e-5", "--temperature", str(temperature),
        "--unified_finetuning", str(unified), "--use_self_distill", str(self_distill),
        "--normalize_embeddings", "True", "--kd_loss_type", "m3_kd_loss", "--knowledge_distillation", "False",
        "--use_cpu", "True", "--save_strategy", "no", "--report_to", "none", "--logging_steps", "1",
        "--dataloader_num_workers", "0", "--seed", str(seed), "--disable_tqdm", "True",
        "--gradient_checkpointing", str(gradient_checkpointing),
    ]  # fmt: skip
    if sub_batch_size:
        argv += ["--sub_batch_size", str(sub_batch_size)]
    sys.argv = ["FlagEmbedding.finetune.embedder.encoder_only.m3", *argv]
    try:
        runpy.run_module(
            "FlagEmbedding.finetune.embedder.encoder_only.m3", run_name="__main__", alter_sys=True
        )
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    step_times = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {
        "step_times": step_times[warmup_steps:],
        "warmup_times": step_times[:warmup_steps],
        "tokens_per_step": tokens[warmup_steps : warmup_steps + steps],
        "threads": torch.get_num_threads(),
    }


def _model(model_dir: str):
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(model_dir, devices="cpu", use_fp16=False)


def _load(path: str):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def task_encode(
    model_dir: str, texts: str, batch_size: int = 256, max_length: int = 512, warmup: int = 64
) -> dict:
    model = _model(model_dir)
    return timed_encode(model, _load(texts), batch_size=batch_size, max_length=max_length, warmup=warmup)


def task_rerank(
    model_dir: str, queries: str, passages: str, candidates: str, scores_out: str, max_length: int = 512
) -> dict:
    import numpy as np

    model = _model(model_dir)
    kwargs = {
        "max_length": max_length,
        "return_dense": False,
        "return_sparse": True,
        "return_colbert_vecs": True,
    }
    q = model.encode(_load(queries), **kwargs)
    p = model.encode(_load(passages), **kwargs)
    cands = _load(candidates)
    q_lw, p_lw, q_cv, p_cv = q["lexical_weights"], p["lexical_weights"], q["colbert_vecs"], p["colbert_vecs"]
    pairs = [(i, j) for i, row in enumerate(cands) for j in row]
    start = time.perf_counter()
    sparse = [model.compute_lexical_matching_score(q_lw[i], p_lw[j]) for i, j in pairs]
    mid = time.perf_counter()
    colbert = [float(model.colbert_score(q_cv[i], p_cv[j])) for i, j in pairs]
    end = time.perf_counter()
    np.save(
        scores_out, np.stack([np.asarray(sparse, dtype=np.float64), np.asarray(colbert, dtype=np.float64)])
    )
    return {
        "pairs": len(pairs),
        "sparse_seconds": mid - start,
        "colbert_seconds": end - mid,
        "seconds": end - start,
    }


def task_compute_score(
    model_dir: str, pairs: str, scores_out: str, batch_size: int = 256, warmup: int = 16
) -> dict:
    import numpy as np

    model = _model(model_dir)
    sentence_pairs = [tuple(p) for p in _load(pairs)]
    weights = [0.4, 0.2, 0.4]
    model.compute_score(sentence_pairs[:warmup], batch_size=batch_size, weights_for_different_modes=weights)
    start = time.perf_counter()
    out = model.compute_score(sentence_pairs, batch_size=batch_size, weights_for_different_modes=weights)
    seconds = time.perf_counter() - start
    keys = ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense")
    np.save(scores_out, np.asarray([out[k] for k in keys], dtype=np.float64))
    return {"pairs": len(sentence_pairs), "seconds": seconds}


def task_inbatch(
    model_dir: str,
    inputs: str,
    repeats: int = 3,
    temperature: float = 0.02,
    scores_out: str = "",
    sparse_repeats: int = 0,
) -> dict:
    """Sparse and ColBERT training score matrices from saved hidden states: forward + backward, timed.

    ``sparse_repeats`` > 0 times the sparse path that often WITHOUT a warm-up (each call allocates its
    (B, L, V) tensors afresh, so a warm-up saves nothing, and one call takes tens of seconds).
    """
    import numpy as np
    import torch
    import torch.nn.functional as F
    from FlagEmbedding.finetune.embedder.encoder_only.m3.modeling import EncoderOnlyEmbedderM3Model
    from FlagEmbedding.finetune.embedder.encoder_only.m3.runner import EncoderOnlyEmbedderM3Runner
    from transformers import AutoTokenizer

    data = np.load(inputs)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = EncoderOnlyEmbedderM3Model(
        EncoderOnlyEmbedderM3Runner.get_model(model_dir), tokenizer=tokenizer, temperature=temperature,
        normalize_embeddings=True, unified_finetuning=True,
    )  # fmt: skip
    model.train()
    q_ids, p_ids = torch.from_numpy(data["q_ids"]), torch.from_numpy(data["p_ids"])
    q_mask, p_mask = torch.from_numpy(data["q_mask"]), torch.from_numpy(data["p_mask"])

    def sparse_step():
        q_h = torch.from_numpy(data["q_hidden"]).requires_grad_()
        p_h = torch.from_numpy(data["p_hidden"]).requires_grad_()
        q = model._sparse_embedding(q_h, q_ids)
        p = model._sparse_embedding(p_h, p_ids)
        scores = model.compute_sparse_score(q, p)
        scores.sum().backward()
        return scores

    def colbert_step():
        q_h = torch.from_numpy(data["q_hidden"]).requires_grad_()
        p_h = torch.from_numpy(data["p_hidden"]).requires_grad_()
        q = F.normalize(model._colbert_embedding(q_h, q_mask), dim=-1)
        p = F.normalize(model._colbert_embedding(p_h, p_mask), dim=-1)
        scores = model.compute_colbert_score(q, p, q_mask=q_mask)
        scores.sum().backward()
        return scores

    times: dict[str, list[float]] = {"sparse": [], "colbert": []}
    last = {}
    for name, step in (("sparse", sparse_step), ("colbert", colbert_step)):
        cold = name == "sparse" and sparse_repeats > 0
        count = sparse_repeats if cold else repeats
        if not cold:
            step()  # warm-up
        for _ in range(count):
            start = time.perf_counter()
            last[name] = step().detach()
            times[name].append(time.perf_counter() - start)
    if scores_out:
        np.save(scores_out, np.stack([last["sparse"].numpy(), last["colbert"].numpy()]).astype(np.float64))
    return {"seconds": times}


def task_parity(model_dir: str, inputs: str, output: str, threads: int = 2) -> dict:
    """The calls of :func:`benchmarks.api_calls.run_api` on ``BGEM3FlagModel``; arrays to ``output`` (.npz)."""
    from pathlib import Path

    import torch
    from FlagEmbedding import BGEM3FlagModel

    torch.set_num_threads(threads)
    model = BGEM3FlagModel(model_dir, use_fp16=False, devices="cpu")
    save_results(run_api(model, json.loads(Path(inputs).read_text(encoding="utf-8"))), output)
    return {"output": output}


def main() -> None:
    usage = 'flag_worker.py \'{"task": NAME, "kwargs": {...}}\' (or \'{"tasks": [...]}\')'
    serve(sys.argv[1:], lambda task: globals()[f"task_{task['task']}"], usage)


if __name__ == "__main__":
    main()
