"""The training core stands alone: a fork may delete the corpora and the pinned-wheel sources and still train.

The package is copied without ``m3lit/corpora/`` and ``m3lit/sources/`` (``benchmarks/`` lives outside it),
and a subprocess whose ``PYTHONPATH`` is only that copy builds a tokenizer and a tiny model from a JSONL
file and fits :class:`~m3lit.training.lit_module.M3LitModule` with
:class:`~m3lit.data.datamodule.M3DataModule` on CPU. docs/architecture.md ("Layers") states the rule;
tests/unit/test_architecture.py checks it on the imports, this test by running the code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Removed from the copy: everything the core must not need.
REMOVED = ("corpora", "sources")

#: Runs in the copy: fit a few steps, then print what the test checks as one JSON line.
SCRIPT = r"""
import importlib.util
import json
import sys
from pathlib import Path

# A development install (pip install -e .) adds an import finder that serves m3lit's submodules from the
# repository, corpora included: drop it, so that only the copy can be imported.
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path_hooks[:] = [h for h in sys.path_hooks if not getattr(h, "__module__", "").startswith("__editable__")]
sys.path_importer_cache.clear()

import lightning as L
import torch

import m3lit
import m3lit.callbacks.checkpoint
import m3lit.callbacks.progress
import m3lit.callbacks.retrieval_metrics
import m3lit.callbacks.stage_switch
from m3lit.data.datamodule import M3DataModule
from m3lit.data.options import DataOptions
from m3lit.model.reference import ModelReferenceError, check_model_reference
from m3lit.model.tiny_tokenizer import build_tokenizer
from m3lit.training.build import NetOptions, build_m3_model
from m3lit.training.lit_module import M3LitModule

work = Path(sys.argv[1])
texts = [json.loads(line) for line in (work / "train.jsonl").read_text().splitlines()]
corpus = [t for row in texts for t in (row["query"], *row["pos"], *row["neg"])]
build_tokenizer(corpus * 4, vocab_size=300).save_pretrained(str(work / "tokenizer"))


class LossLog(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(trainer.callback_metrics["train/loss"]))


torch.manual_seed(0)
net = build_m3_model(
    NetOptions(
        tokenizer=str(work / "tokenizer"),
        init={"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_length": 64},
        colbert_dim=16,
    )
)
module = M3LitModule(net, stage="unified_self_distill", optimizer={"lr": 1e-3})
data = M3DataModule(
    DataOptions(
        train_data=str(work / "train.jsonl"),
        train_group_size=3,
        query_max_len=16,
        passage_max_len=32,
        bucket_edges=[],
        bucket_batch_sizes=[4],
        sub_batch_size=None,
        cache_dir=str(work / "lengths"),
        seed=7,
    ),
    tokenizer=net.tokenizer,
)
log = LossLog()
trainer = L.Trainer(
    max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
    enable_model_summary=False, callbacks=[log],
)
trainer.fit(module, datamodule=data)
try:
    check_model_reference("m3lit:multilingual-e5-small-q4")
    named = "resolved"
except ModelReferenceError as error:
    named = str(error)
loaded = sorted(name for name in sys.modules if name.startswith(("m3lit.", "benchmarks")))
print(json.dumps({
    "package": m3lit.__file__,
    "global_step": trainer.global_step,
    "losses": log.losses,
    "named_model": named,
    "missing": [n for n in ("m3lit.corpora", "m3lit.sources") if importlib.util.find_spec(n) is None],
    "loaded": loaded,
}))
"""


def _rows(n: int) -> list[dict]:
    topics = ["river", "mountain", "forest", "desert", "ocean", "valley", "island", "glacier"]
    rows = []
    for i in range(n):
        topic, other = topics[i % len(topics)], topics[(i + 3) % len(topics)]
        rows.append(
            {
                "query": f"where does the {topic} number {i} begin",
                "pos": [f"the {topic} number {i} begins high in the hills and runs far"],
                "neg": [f"the {other} is quiet at night {i}", f"a {other} near the town {i + 1}"],
            }
        )
    return rows


def test_the_core_fits_a_tiny_model_without_corpora_or_sources(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(
        ROOT / "m3lit",
        copy / "m3lit",
        ignore=shutil.ignore_patterns("__pycache__", *REMOVED),
    )
    assert not any((copy / "m3lit" / name).exists() for name in REMOVED)
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(16)), encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": str(copy),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "2",
        "M3LIT_CACHE": str(tmp_path / "cache"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(work)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(result["package"]).is_relative_to(copy)  # the copy ran, not the repository's m3lit
    assert result["missing"] == ["m3lit.corpora", "m3lit.sources"]
    assert result["global_step"] == 3
    assert len(result["losses"]) == 3
    assert all(loss == loss and abs(loss) != float("inf") for loss in result["losses"])  # finite
    assert "m3lit/sources/, which provides them, is not in this copy" in result["named_model"]
    forbidden = ("m3lit.corpora", "m3lit.sources", "m3lit.retrieval.report", "benchmarks")
    assert not [name for name in result["loaded"] if name.startswith(forbidden)]
