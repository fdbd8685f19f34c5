"""``RetrievalMetrics`` under a 2-process CPU DDP run (tiny module and loader: tests/unit/callbacks)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from test_retrieval_callback import FAST, keys, loader, make_module

from m3lit.callbacks.retrieval_metrics import RetrievalMetrics


class DumpRankView(Callback):
    """Writes what each rank sees at the end of training (callback_metrics + the callback's history)."""

    def __init__(self, out_dir: str, retrieval: RetrievalMetrics) -> None:
        self.out_dir, self.retrieval = out_dir, retrieval

    def on_train_end(self, trainer, pl_module):
        view = {
            "callback_metrics": {
                k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")
            },
            "history": self.retrieval.history,
        }
        Path(self.out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(view))


@pytest.mark.timeout(300)  # a collective mismatch would hang: fail instead
def test_ddp_ranks_log_identical_values(tiny_config, tokenizer, tiny_beir_dir, tmp_path):
    """Two CPU processes (gloo): rank 0 evaluates, both ranks log the broadcast values (no deadlock)."""
    module = make_module(tiny_config, tokenizer)
    callback = RetrievalMetrics(
        tiny_beir_dir, every_n_steps=1, modes=["dense", "sparse"], bm25=False, retrieval=FAST
    )
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(start_method="spawn", find_unused_parameters=True),
        logger=False,
        enable_checkpointing=False,
        callbacks=[callback, DumpRankView(str(tmp_path), callback)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader(tokenizer, tiny_beir_dir, batch_size=2))
    views = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert views[0] == views[1]  # bit-identical values and history on both ranks
    assert [step for step, _ in views[0]["history"]] == [1, 2]
    assert set(views[0]["callback_metrics"]) == keys(["dense", "sparse"])
    final = views[0]["history"][-1][1]
    assert views[0]["callback_metrics"] == {
        f"val/{m}/{mode}": v for mode, row in final.items() for m, v in row.items()
    }
