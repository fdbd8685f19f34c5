"""StageSwitch: schedule validation, the flip at the configured global step (stage AND data source), and
a resume that lands in the right stage."""

from __future__ import annotations

import csv
import logging
import math

import lightning as L
import pytest
from train_utils import tiny_corpus, tiny_run_overrides

from m3lit.callbacks.stage_switch import StageSwitch
from m3lit.config.compose import compose
from m3lit.train import train
from m3lit.training.stages import ScheduleEntry, parse_schedule


class StepRecorder(L.Callback):
    """Records (global step, stage, data source, group size, loss parts) of every training step."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        parts = tuple(
            sorted(k.split("/")[-1] for k in trainer.callback_metrics if k.startswith("train/loss/"))
        )
        self.rows.append(
            (trainer.global_step - 1, pl_module.stage, batch.meta["source"], batch.group_size, parts)
        )


def test_parse_schedule_sorts_and_accepts_both_forms():
    entries = parse_schedule(
        {"9": "unified_self_distill", 0: {"stage": "dense", "source": "pairs"}, 4: "unified"}
    )
    assert entries == [
        ScheduleEntry(0, "dense", "pairs"),
        ScheduleEntry(4, "unified", None),
        ScheduleEntry(9, "unified_self_distill", None),
    ]


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({}, "non-empty mapping"),
        ({5: "dense"}, "must start at step 0"),
        ({0: "dense", -3: "unified"}, "negative"),
        ({0: "dense", "x": "unified"}, "not an integer"),
        ({0: "dense", 10: "unifed"}, "entry 10: unknown training stage 'unifed'"),
        ({0: "dense", "10": "unified", 10: "unified_self_distill"}, "given twice"),
        ({0: {"stage": "dense", "sorce": "pairs"}}, "got keys"),
        ({0: "dense", 10: "dense"}, "repeats stage"),
        ({0: 3}, "must be a stage name or a mapping"),
    ],
)
def test_parse_schedule_errors(schedule, message):
    with pytest.raises(ValueError, match=message):
        StageSwitch(schedule)


def test_lookup():
    switch = StageSwitch(
        {
            0: {"stage": "dense", "source": "pairs"},
            3: {"stage": "unified", "source": "labelled"},
            5: "unified_self_distill",
        }
    )
    assert [switch.stage_at(s) for s in (0, 2, 3, 4, 5, 100)] == ["dense"] * 2 + ["unified"] * 2 + [
        "unified_self_distill"
    ] * 2
    assert [switch.source_at(s) for s in (0, 2, 3, 6)] == ["pairs", "pairs", "labelled", "labelled"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tokenizer):
    return tiny_corpus(tmp_path_factory.mktemp("corpus"), tokenizer)


SCHEDULE = "callbacks.stage_switch.schedule={0:{stage:dense,source:pairs},3:{stage:unified,source:labelled},5:unified_self_distill}"


def _run(corpus, run_dir, *extra):
    cfg = compose(
        tiny_run_overrides(
            corpus, run_dir, SCHEDULE, "+callbacks.recorder._target_=test_stage_switch.StepRecorder", *extra
        )
    )
    metrics, objects = train(cfg)
    recorder = next(c for c in objects["callbacks"] if isinstance(c, StepRecorder))
    switch = next(c for c in objects["callbacks"] if isinstance(c, StageSwitch))
    return recorder.rows, switch, objects


def test_flips_stage_and_source_at_the_configured_steps_and_survives_resume(corpus, tmp_path):
    rows, switch, objects = _run(
        corpus,
        tmp_path / "a",
        "trainer.max_steps=7",
        "callbacks.model_checkpoint.every_n_train_steps=4",
        "callbacks.model_checkpoint.save_top_k=-1",
    )
    assert [r[0] for r in rows] == list(range(7))
    expected_stage = ["dense"] * 3 + ["unified"] * 2 + ["unified_self_distill"] * 2
    assert [r[1] for r in rows] == expected_stage
    assert [r[2] for r in rows] == ["pairs"] * 3 + ["labelled"] * 4  # batches drawn from the switched source
    assert [r[3] for r in rows] == [1] * 3 + [3] * 4  # pairs G=1, labelled G=3
    assert rows[0][4] == ("dense",)
    assert rows[3][4] == ("colbert", "dense", "inter", "sparse")
    assert rows[6][4] == ("colbert", "dense", "inter", "self_distill", "sparse")
    assert [(step, stage) for step, stage, _ in switch.history] == [
        (0, "dense"),
        (3, "unified"),
        (5, "unified_self_distill"),
    ]

    # resume from the step-4 checkpoint: the run continues in stage "unified" and flips at 5 again
    ckpt = tmp_path / "a" / "checkpoints" / "step_000004.ckpt"
    assert ckpt.is_file()
    rows2, switch2, objects2 = _run(corpus, tmp_path / "b", "trainer.max_steps=7", f"ckpt_path={ckpt}")
    assert [r[:4] for r in rows2] == [r[:4] for r in rows[4:]]
    assert switch2.history[0][:2] == (0, "dense") and switch2.history[-1][:2] == (5, "unified_self_distill")
    assert objects2["model"].stage == "unified_self_distill"


ISSUE_SCHEDULE = (
    "callbacks.stage_switch.schedule={0:{heads:[dense,sparse],self_distill:false,source:labelled},"
    "3:{heads:[colbert],source:labelled}}"
)


def test_csv_log_names_the_stage_and_never_repeats_an_untrained_heads_loss(corpus, tmp_path, caplog):
    """Issue 30 items 1 and 7: after the switch to a ColBERT-only stage the dense/sparse/inter losses are NaN
    (not step 2's values again), ``train/stage`` is the schedule index, the head flags say what trained, and
    the step-0 message names only the stage the run starts in."""
    overrides = [o for o in tiny_run_overrides(corpus, tmp_path, ISSUE_SCHEDULE) if o != "~logger"]
    cfg = compose(
        [*overrides, "logger=csv", "trainer.log_every_n_steps=1", "trainer.max_steps=5", "export=false"]
    )
    with caplog.at_level(logging.INFO):
        train(cfg)
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        rows = {int(r["step"]): r for r in csv.DictReader(handle) if r.get("train/loss")}
    assert sorted(rows) == [0, 1, 2, 3, 4]

    def col(key):
        return [float(rows[s][key]) if rows[s][key] != "" else None for s in range(5)]

    for part in ("dense", "sparse", "inter"):
        values = col(f"train/loss/{part}")
        assert all(v is not None and math.isfinite(v) for v in values[:3]), (part, values)
        assert all(v is not None and math.isnan(v) for v in values[3:]), (part, values)
    colbert = col("train/loss/colbert")
    assert colbert[:3] == [None] * 3 and all(math.isfinite(v) for v in colbert[3:])
    assert len(set(colbert[3:])) == 2  # computed at each step, not repeated
    assert col("train/stage") == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert col("train/head/dense") == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert col("train/head/sparse") == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert col("train/head/colbert") == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert col("train/self_distill") == [0.0] * 5
    messages = [r.getMessage() for r in caplog.records if "StageSwitch" in r.getMessage()]
    assert messages[0] == "StageSwitch starts at global step 0: stage dense+sparse; data source labelled"
    assert messages[1] == "StageSwitch at global step 3: stage dense+sparse -> colbert"
    assert "unified_self_distill" not in " ".join(messages)
