"""Shared helpers for the training-system tests: a tiny offline corpus and the overrides of a tiny run."""

from __future__ import annotations

import builtins
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from m3lit.retrieval import write_beir

#: Small enough for seconds per run on 2 cores; every real-recipe experiment is shrunk to this.
TINY_MODEL = [
    "model.net.init.hidden_size=32",
    "model.net.init.num_layers=1",
    "model.net.init.num_heads=2",
    "model.net.init.intermediate_size=64",
    "model.net.init.max_length=64",
    "model.net.colbert_dim=16",
]


def tiny_corpus(root: Path, tokenizer) -> dict[str, str]:
    """Write pairs.jsonl, train.jsonl (3 negatives), an eval BEIR folder and the tokenizer under ``root``.

    Queries are the first sentence of each builtin's docstring, positives the name plus the docstring.
    """
    docs = [
        (n, o.__doc__)
        for n, o in sorted(vars(builtins).items())
        if isinstance(getattr(o, "__doc__", None), str)
    ]
    rows = []
    for name, doc in docs:
        text = " ".join(doc.split())
        first = text.split(". ")[0][:120]
        rows.append({"query": first, "pos": [f"{name}: {text[:300]}"]})
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    with (
        open(root / "pairs.jsonl", "w", encoding="utf-8") as pairs,
        open(root / "train.jsonl", "w", encoding="utf-8") as train,
    ):
        for i, row in enumerate(rows):
            pairs.write(json.dumps({**row, "neg": []}) + "\n")
            others = [r["pos"][0] for j, r in enumerate(rows) if j != i]
            train.write(json.dumps({**row, "neg": rng.sample(others, 3)}) + "\n")
    corpus = {f"d{i}": r["pos"][0] for i, r in enumerate(rows)}
    queries = {f"q{i}": r["query"] for i, r in enumerate(rows[:24])}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(24)}
    write_beir(root / "eval", corpus, queries, qrels)
    tokenizer.save_pretrained(str(root / "tokenizer"))
    return {
        "pairs": str(root / "pairs.jsonl"),
        "train": str(root / "train.jsonl"),
        "eval": str(root / "eval"),
        "tokenizer": str(root / "tokenizer"),
    }


def tiny_data_overrides(corpus: dict[str, str]) -> list[str]:
    """Data overrides shared by every tiny run: the offline corpus, short lengths, small buckets."""
    return [
        f"data.train_data={corpus['train']}",
        f"data.pairs_data={corpus['pairs']}",
        f"data.cache_dir={Path(corpus['train']).parent / 'lengths'}",
        "data.query_max_len=24",
        "data.passage_max_len=40",
        "data.train_group_size=3",
        "data.bucket_edges=[64]",
        "data.bucket_batch_sizes=[4,4]",
        "data.pairs_bucket_batch_sizes=[8,8]",
    ]


def tiny_run_overrides(corpus: dict[str, str], run_dir: Path, *extra: str) -> list[str]:
    """Overrides turning ``experiment=demo`` into a seconds-long offline run on ``corpus``."""
    return [
        "experiment=demo",
        f"hydra.run.dir={run_dir}",
        "~logger",
        "print_config=false",
        "~corpus",  # no corpus: its paths are given below
        *tiny_data_overrides(corpus),
        f"data.tokenizer={corpus['tokenizer']}",
        "data.sub_batch_size=null",
        f"model.net.tokenizer={corpus['tokenizer']}",
        *TINY_MODEL,
        "evaluate.enabled=false",
        f"evaluate.dataset_dir={corpus['eval']}",
        "evaluate.options={config:{query_max_len:24,passage_max_len:40,batch_size:64}}",
        "trainer.enable_model_summary=false",
        "~callbacks.progress_bar",
        "+trainer.enable_progress_bar=false",
        *extra,
    ]


def run_train_cli(overrides: list[str], timeout: int, threads: int = 2) -> subprocess.CompletedProcess:
    """``python -m m3lit.train *overrides`` as a user types it (offline), from the repository root."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    return subprocess.run(
        [sys.executable, "-m", "m3lit.train", *overrides],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fit_three_steps(net, tokenizer, ckpt_dir: Path, lr: float = 1e-3):
    """Three ``unified`` optimizer steps of ``M3LitModule`` on 12 builtin docstrings (batches of 4 pairs),
    saved by the Lightning Trainer as ``ckpt_dir/last.ckpt``. Returns (checkpoint path, LightningModule)."""
    import lightning as L
    import torch
    from conftest import builtin_docstrings

    from m3lit.data.batch import Encoded, M3Batch
    from m3lit.training.lit_module import M3LitModule

    texts = builtin_docstrings()[:12]

    def enc(batch, n):
        b = tokenizer(batch, padding=True, truncation=True, max_length=n, return_tensors="pt")
        return Encoded(b["input_ids"], b["attention_mask"])

    batches = [
        M3Batch(
            queries=[enc([" ".join(t.split()[:4]) for t in texts[i : i + 4]], 16)],
            passages=[enc(texts[i : i + 4], 32)],
            group_size=1,
        )
        for i in range(0, 12, 4)
    ]
    lit = M3LitModule(
        net, stage="unified", optimizer={"lr": lr}, scheduler={"name": "constant", "warmup_steps": 0}
    )
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(lit, torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False))
    ckpt = Path(ckpt_dir) / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt, lit


def tiny_cross_encoder(folder: Path, tiny_config, tokenizer, seed: int = 0):
    """A tiny random XLM-R cross-encoder (one logit per pair) saved with ``tokenizer`` in ``folder``; returns
    the model, in eval mode."""
    import torch
    from transformers import XLMRobertaForSequenceClassification

    config = tiny_config.__class__.from_dict(tiny_config.to_dict())
    config.num_labels = 1
    config.architectures = ["XLMRobertaForSequenceClassification"]
    torch.manual_seed(seed)
    model = XLMRobertaForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(str(folder))
    return model
