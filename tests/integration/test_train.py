"""``train(cfg)`` end to end: a fast_dev_run of every experiment (the real-recipe ones on a local tiny model
folder instead of the hub id), and the command-line contract of ``python -m m3lit.train``."""

from __future__ import annotations

import csv
import json
import logging
import shutil

import pytest
import torch
from huggingface_hub import metadata_load
from train_utils import run_train_cli, tiny_corpus, tiny_data_overrides, tiny_run_overrides

from m3lit.callbacks.retrieval_metrics import RetrievalMetrics
from m3lit.config.compose import CONFIG_DIR, compose
from m3lit.model import M3Model
from m3lit.retrieval.report.chart import write_chart
from m3lit.retrieval.report.provenance import read_results
from m3lit.retrieval.report.tables import as_table
from m3lit.train import train

REPO = CONFIG_DIR.parent
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tokenizer):
    return tiny_corpus(tmp_path_factory.mktemp("corpus"), tokenizer)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tiny_config, tokenizer):
    """A local stand-in for BAAI/bge-m3(-retromae/-unsupervised): same layout, tiny random weights."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_m3")
    M3Model.from_config(tiny_config, tokenizer, colbert_dim=16).save_pretrained(folder)
    return folder


def _real_recipe_overrides(experiment, corpus, model_dir, run_dir):
    return [
        f"experiment={experiment}",
        f"hydra.run.dir={run_dir}",
        "debug=fdr",
        "print_config=false",
        f"model.net.name_or_path={model_dir}",
        "~corpus",  # the bible experiments' corpus preparation is tested in test_real_model.py
        "trainer=cpu",
        "trainer.precision=32-true",
        "trainer.enable_model_summary=false",
        *tiny_data_overrides(corpus),
        "evaluate.enabled=false",
        "~callbacks.progress_bar",
        "+trainer.enable_progress_bar=false",
    ]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_of_every_experiment(experiment, corpus, tiny_model_dir, tmp_path):
    if experiment == "demo":
        overrides = tiny_run_overrides(corpus, tmp_path, "debug=fdr")
    else:
        overrides = _real_recipe_overrides(experiment, corpus, tiny_model_dir, tmp_path)
    cfg = compose(overrides)
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 1
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    stage = objects["model"].stage
    expected_parts = {"dense"} if stage == "dense" else {"dense", "sparse", "colbert", "inter"}
    if stage == "unified_self_distill":
        expected_parts.add("self_distill")
    assert {k.split("/")[-1] for k in metrics if k.startswith("train/loss/")} == expected_parts
    export = M3Model.from_pretrained(objects["export_dir"])
    assert export.heads_loaded
    assert (tmp_path / "config.yaml").is_file()


def test_command_line_contract(corpus, tmp_path):
    """`python -m m3lit.train experiment=demo trainer.max_steps=N hydra.run.dir=DIR` writes the checkpoint,
    the export and results.json; the export holds the checkpoint's weights; the CSV log has every key."""
    run = tmp_path / "run"
    overrides = [o for o in tiny_run_overrides(corpus, run) if o != "~logger"]
    overrides = [o for o in overrides if not o.startswith("evaluate.enabled")]
    overrides += [
        "logger=csv",
        "trainer.max_steps=6",
        "trainer.log_every_n_steps=1",
        "callbacks.model_checkpoint.every_n_train_steps=4",
        "callbacks.stage_switch.schedule={0:{stage:dense,source:pairs},2:{stage:unified,source:labelled},4:unified_self_distill}",
        "evaluate.modes=[dense,sparse,colbert,dense+sparse,all,bm25]",
    ]
    done = run_train_cli(overrides, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file() and (run / "checkpoints" / "step_000006.ckpt").is_file()
    assert (run / "config.yaml").is_file() and (run / ".hydra" / "config.yaml").is_file()
    results, settings = read_results(run / "results.json")
    baseline = read_results(run / "baseline")[0]
    assert settings["model"] == str(run / "export") and (run / "runs" / "all.trec").is_file()
    for table in (results, baseline):
        assert set(table) == {"dense", "sparse", "colbert", "dense+sparse", "all", "bm25"}
        assert all(0.0 <= v <= 1.0 for metrics in table.values() for v in metrics.values())
    assert (
        "| Dense |" in done.stdout
        and "untrained model (step 0)" in done.stdout
        and "trained model (step 6)" in done.stdout
    )
    expected = write_chart(
        tmp_path / "expected.png",
        as_table(results),
        {"untrained model (step 0)": as_table(baseline)},
        label="trained model (step 6)",
    )
    assert (run / "results.png").read_bytes() == expected.read_bytes()  # baseline bars drawn too

    export = M3Model.from_pretrained(run / "export")
    state = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    for name, value in export.state_dict().items():
        torch.testing.assert_close(value, state[f"model.{name}"], rtol=0, atol=0, msg=name)
    provenance = json.loads((run / "export" / "m3lit.json").read_text())
    assert provenance["step"] == 6 and provenance["stage"] == "unified_self_distill"
    assert provenance["hardware"].startswith("CPU ") and provenance["hardware"].endswith(" cores)")
    assert f"- Hardware: {provenance['hardware']} x 1 " in (run / "export" / "README.md").read_text()
    card = metadata_load(run / "export" / "README.md")  # written again after the final evaluation
    (entry,) = card["model-index"][0]["results"]
    values = {m["name"]: m["value"] for m in entry["metrics"]}
    assert values["All nDCG@10"] == results["all"]["ndcg@10"] and not any("BM25" in n for n in values)

    with open(run / "csv" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    keys = set(rows[0])
    for key in ("train/loss", "train/loss/dense", "train/loss/sparse", "train/loss/colbert", "train/loss/inter",
                "train/loss/self_distill", "train/stage", "train/lr", "train/negatives_per_query", "train/queries_per_s", "train/tokens_per_s"):  # fmt: skip
        assert key in keys, key
    by_step = {int(r["step"]): r for r in rows if r["train/loss"]}
    assert [float(by_step[s]["train/stage"]) for s in (0, 2, 4)] == [0.0, 1.0, 2.0]
    assert float(by_step[0]["train/negatives_per_query"]) == 7.0  # 8 pairs, in-batch
    assert float(by_step[2]["train/negatives_per_query"]) == 11.0  # 4 queries x G=3, in-batch + hard


def test_retrieval_metrics_callback_is_wired(corpus, tmp_path):
    """callbacks=with_retrieval adds the evaluation helper's RetrievalMetrics (val/<metric>/<mode> keys)."""
    cfg = compose(
        tiny_run_overrides(
            corpus,
            tmp_path,
            "callbacks=with_retrieval",
            "callbacks.retrieval_metrics.every_n_steps=2",
            "trainer.max_steps=2",
            "callbacks.stage_switch.schedule={0:{stage:unified,source:labelled}}",
            "export=false",
        )
    )
    metrics, objects = train(cfg)
    assert {f"val/ndcg@10/{mode}" for mode in ("dense", "sparse", "colbert", "dense+sparse", "all")} <= set(
        metrics
    )
    assert all(0.0 <= metrics[f"val/ndcg@10/{m}"] <= 1.0 for m in ("dense", "all"))


def test_pretrained_model_is_built_in_training_mode(tiny_model_dir):
    """from_pretrained returns eval mode; Lightning would keep it, silently training without dropout."""
    from m3lit.training.build import NetOptions, build_m3_model

    model = build_m3_model(NetOptions(str(tiny_model_dir)))
    assert model.training and all(m.training for m in model.modules())


def test_metrics_in_every_mode_once_heads_train_from_a_headless_encoder(
    corpus, tiny_model_dir, tmp_path, caplog
):
    """A plain encoder (no sparse_linear.pt/colbert_linear.pt): two dense steps are evaluated dense-only, every
    step after the switch to a head-training stage in all five modes; BM25 computed once and re-logged; the
    monitoring checkpoint sees val/ndcg@10/all; results.json reuses the callback's step 4 (not re-evaluated)."""
    headless = tmp_path / "headless"
    shutil.copytree(tiny_model_dir, headless)
    for name in ("sparse_linear.pt", "colbert_linear.pt"):
        (headless / name).unlink()
    run = tmp_path / "run"
    overrides = [o for o in tiny_run_overrides(corpus, run) if o != "~logger" and "evaluate.enabled" not in o]
    overrides = [o for o in overrides if not o.startswith(("model.net.tokenizer", "model.net.init."))]
    overrides += [
        f"model.net.name_or_path={headless}",
        "callbacks=with_retrieval",
        "callbacks.retrieval_metrics.every_n_steps=1",
        "callbacks.stage_switch.schedule={0:{stage:dense,source:pairs},2:{stage:unified,source:labelled}}",
        "callbacks.model_checkpoint.monitor=val/ndcg@10/all",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        "trainer.max_steps=4",
        "logger=csv",
        "evaluate.baseline=false",
    ]
    with caplog.at_level(logging.INFO, logger="m3lit.train"):
        metrics, objects = train(compose(overrides))
    callback = next(c for c in objects["callbacks"] if isinstance(c, RetrievalMetrics))
    history = dict(callback.history)
    assert list(history) == [1, 2, 3, 4]  # each step evaluated once
    model_modes = ["dense", "sparse", "colbert", "dense+sparse", "all"]
    assert set(history[1]) == set(history[2]) == {"dense", "bm25"}  # stage 1: heads untrained
    assert set(history[3]) == set(history[4]) == {*model_modes, "bm25"}
    assert all(history[s]["bm25"] == history[1]["bm25"] for s in history)
    with open(run / "csv" / "metrics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val/ndcg@10/dense")]
    by_step = {int(r["step"]): r for r in rows}
    assert sorted(by_step) == [1, 2, 3, 4]
    assert by_step[2]["val/ndcg@10/all"] == "" and float(by_step[3]["val/ndcg@10/all"]) == pytest.approx(
        history[3]["all"]["ndcg@10"]
    )
    saver = objects["trainer"].checkpoint_callback
    assert float(saver.best_model_score) == pytest.approx(max(history[s]["all"]["ndcg@10"] for s in (3, 4)))
    # the final evaluation reuses step 4 for the model modes; only what the callback lacked would be evaluated
    assert "reused from RetrievalMetrics" in caplog.text
    results, _ = read_results(run / "results.json")
    assert results == {mode: history[4][mode] for mode in [*model_modes, "bm25"]}
    assert metrics["results"] == results


def test_log_interval_longer_than_the_run_is_clamped(corpus, tmp_path):
    run = tmp_path / "run"
    overrides = [o for o in tiny_run_overrides(corpus, run) if o != "~logger"]
    overrides += ["logger=csv", "trainer.max_steps=3", "trainer.log_every_n_steps=20", "export=false"]
    with pytest.warns(UserWarning, match=r"log_every_n_steps=20 exceeds trainer.max_steps=3"):
        _, objects = train(compose(overrides))
    assert objects["trainer"].log_every_n_steps == 3
    with open(run / "csv" / "metrics.csv", newline="") as handle:
        steps = [int(r["step"]) for r in csv.DictReader(handle) if r["train/loss"]]
    assert steps == [2]  # the third step (0-based index 2) is logged; 20 would have logged nothing


def test_a_resumed_run_draws_the_first_launchs_baseline(tmp_path):
    """On a resume the untrained model is not evaluated again: its baseline/results.json is drawn instead."""
    from m3lit.retrieval.report.write import write_reports, write_suite_reports
    from m3lit.train import BASELINE, _baselines

    single = {"dense": {"ndcg@10": 0.25}}
    write_reports(single, tmp_path / "one" / "baseline")
    assert _baselines({}, tmp_path / "one", suite=False) == {BASELINE: single}
    assert _baselines({"baseline": {"x": 1}}, tmp_path / "one", suite=False) == {BASELINE: {"x": 1}}
    assert _baselines({}, tmp_path / "none", suite=False) == {}
    suite = {"T": {"metrics": ["ndcg@10"], "languages": ["en"], "rows": {"Dense": {"en": {"ndcg@10": 0.5}}}}}
    write_suite_reports(suite, tmp_path / "two" / "baseline", suite="s", settings={})
    assert _baselines({}, tmp_path / "two", suite=True) == {BASELINE: suite}
