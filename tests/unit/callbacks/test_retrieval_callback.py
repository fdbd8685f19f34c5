"""``RetrievalMetrics`` inside real (tiny) Lightning training runs: what it logs, where, and under DDP."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger

from m3lit.callbacks.retrieval_metrics import RetrievalMetrics
from m3lit.model import M3Model
from m3lit.retrieval import MODEL_MODES, evaluate_retrieval
from m3lit.scores import dense_scores

FAST = {"batch_size": 16, "query_max_len": 32, "passage_max_len": 32}
METRICS = ("ndcg@10", "recall@100", "mrr@10")


class TinyDenseModule(L.LightningModule):
    """A minimal system around an M3Model: dense InfoNCE over in-batch negatives (BGE-M3 Eq. (1))."""

    def __init__(self, model: M3Model) -> None:
        super().__init__()
        self.model = model

    def training_step(self, batch, batch_idx):
        q_ids, p_ids = batch
        q = self.model(q_ids, (q_ids != 1).long(), sparse=False, colbert=False).dense
        p = self.model(p_ids, (p_ids != 1).long(), sparse=False, colbert=False).dense
        return F.cross_entropy(dense_scores(q, p) / 0.05, torch.arange(len(q)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class ListLogger(Logger):
    """Keeps every ``log_metrics`` call (stands in for W&B / CSV: the same Logger interface)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, dict]] = []

    @property
    def name(self):
        return "list"

    @property
    def version(self):
        return 0

    def log_metrics(self, metrics, step=None):
        self.calls.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def loader(tokenizer, beir_dir: Path, batch_size: int = 4) -> torch.utils.data.DataLoader:
    docs = [json.loads(line)["text"] for line in (beir_dir / "corpus.jsonl").read_text().splitlines()][:16]
    queries = [" ".join(d.split()[:6]) for d in docs]

    def enc(texts: list[str]) -> torch.Tensor:
        return tokenizer(texts, padding="max_length", truncation=True, max_length=24, return_tensors="pt")[
            "input_ids"
        ]

    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(enc(queries), enc(docs)), batch_size=batch_size
    )


def make_module(tiny_config, tokenizer) -> TinyDenseModule:
    torch.manual_seed(0)
    return TinyDenseModule(M3Model.from_config(tiny_config, tokenizer, colbert_dim=16))


def keys(modes) -> set[str]:
    return {f"val/{m}/{mode}" for m in METRICS for mode in modes}


def test_logs_every_mode_every_n_steps_and_at_the_end(tiny_config, tokenizer, tiny_beir_dir, tmp_path):
    module = make_module(tiny_config, tokenizer)
    callback = RetrievalMetrics(tiny_beir_dir, every_n_steps=2, retrieval=FAST)
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="val/ndcg@10/all", mode="max", every_n_train_steps=2, save_top_k=1
    )
    logger = ListLogger()
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=logger,
        callbacks=[callback, checkpoint],
        log_every_n_steps=50,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader(tokenizer, tiny_beir_dir))
    # steps 2 and 3 (end of training): the five modes + the BM25 reference row, computed once, re-logged
    assert [step for step, _ in callback.history] == [2, 3]
    assert set(callback.history[0][1]) == set(callback.history[1][1]) == {*MODEL_MODES, "bm25"}
    assert callback.history[0][1]["bm25"] == callback.history[1][1]["bm25"]
    logged = {step: metrics for step, metrics in logger.calls if any(k.startswith("val/") for k in metrics)}
    assert set(logged) == {2, 3}  # step 2 is not a multiple of log_every_n_steps: still logged
    assert set(logged[2]) == set(logged[3]) == keys([*MODEL_MODES, "bm25"])
    for step, results in callback.history:
        assert logged[step] == {f"val/{m}/{mode}": v for mode, row in results.items() for m, v in row.items()}
    # callback_metrics (what ModelCheckpoint / EarlyStopping read) hold the final values
    final = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    assert final == pytest.approx(logged[3])
    # the monitored key drove the checkpoint at step 2
    assert checkpoint.best_model_score is not None
    assert float(checkpoint.best_model_score) == pytest.approx(logged[2]["val/ndcg@10/all"])
    # the logged values are the trained model's: re-evaluating it gives the same numbers
    again = evaluate_retrieval(module.model, tiny_beir_dir, modes=[*MODEL_MODES, "bm25"], config=FAST)
    assert set(again) == set(callback.history[1][1])
    for mode, row in again.items():
        assert row == pytest.approx(callback.history[1][1][mode], abs=1e-6)
    assert callback.state_dict()["last_step"] == 3


def fast_dev_trainer(callback: RetrievalMetrics) -> L.Trainer:
    """A quiet one-step CPU trainer (``fast_dev_run=1``) carrying ``callback``."""
    return L.Trainer(
        fast_dev_run=1,
        accelerator="cpu",
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_fast_dev_run_evaluates_once_at_the_end(tiny_config, tokenizer, tiny_beir_dir):
    module = make_module(tiny_config, tokenizer)
    # the folder comes through the config (data_dir: ${evaluate.dataset_dir}, filled by a corpus if unset)
    callback = RetrievalMetrics(tiny_beir_dir, every_n_steps=None, bm25=False, retrieval=FAST)
    trainer = fast_dev_trainer(callback)
    trainer.fit(module, loader(tokenizer, tiny_beir_dir))
    assert callback.data_dir == str(tiny_beir_dir)
    assert [step for step, _ in callback.history] == [1]
    assert {k for k in trainer.callback_metrics if k.startswith("val/")} == keys(MODEL_MODES)


def test_a_broken_dataset_fails_at_setup(tiny_config, tokenizer, tiny_beir_dir, tmp_path):
    module = make_module(tiny_config, tokenizer)
    callback = RetrievalMetrics(tmp_path / "missing", retrieval=FAST)
    trainer = fast_dev_trainer(callback)
    with pytest.raises(
        RuntimeError, match="RetrievalMetrics could not load .*missing.*dataset folder not found"
    ):
        trainer.fit(module, loader(tokenizer, tiny_beir_dir))


def test_an_unset_folder_fails_at_setup_saying_which_key(tiny_config, tokenizer, tiny_beir_dir):
    module = make_module(tiny_config, tokenizer)
    trainer = fast_dev_trainer(RetrievalMetrics(None, retrieval=FAST))
    with pytest.raises(RuntimeError, match=r"data_dir is not set: .*callbacks\.retrieval_metrics\.data_dir"):
        trainer.fit(module, loader(tokenizer, tiny_beir_dir))
