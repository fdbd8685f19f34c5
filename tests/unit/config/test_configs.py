"""Hydra configs: every experiment and preset composes; typos and wrong types fail at start-up, naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from m3lit.config.compose import CONFIG_DIR, ConfigError, compose, rewrite_overrides

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in (CONFIG_DIR / "trainer").glob("*.yaml"))
#: Data sources the real-recipe experiments require, so they compose (the paths are not read here).
DATA = ["data.pairs_data=pairs.jsonl", "data.train_data=train.jsonl"]


def _compose(tmp_path, *overrides):
    return compose([f"hydra.run.dir={tmp_path}", *overrides])


def test_expected_experiments_and_presets_exist():
    assert {"demo", "bge_m3_stage1", "bge_m3_stage2", "bge_m3_finetune", "bge_m3_recipe"} <= set(EXPERIMENTS)
    assert {"cpu", "gpu", "ddp", "ddp_cpu", "fsdp", "deepspeed"} <= set(TRAINERS)
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    assert {
        "model",
        "data",
        "loss",
        "callbacks",
        "logger",
        "trainer",
        "paths",
        "debug",
        "experiment",
        "corpus",
    } <= groups


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(tmp_path, experiment):
    cfg = _compose(tmp_path, f"experiment={experiment}", *DATA)
    assert cfg.paths.output_dir == str(tmp_path.resolve())
    assert cfg.callbacks.model_checkpoint.dirpath == f"{tmp_path.resolve()}/checkpoints"
    assert 0 in cfg.callbacks.stage_switch.schedule


def test_paper_recipe_values(tmp_path):
    stage1 = _compose(tmp_path, "experiment=bge_m3_stage1", *DATA)
    assert stage1.model.net.name_or_path == "BAAI/bge-m3-retromae"
    assert (stage1.model.optimizer.lr, stage1.model.scheduler.warmup_ratio, stage1.trainer.max_steps) == (
        5e-5,
        0.1,
        25000,
    )
    assert (stage1.data.pairs_group_size, stage1.data.query_max_len, stage1.data.passage_max_len) == (
        1,
        512,
        8192,
    )
    assert list(stage1.data.pairs_bucket_batch_sizes) == [
        700,
        570,
        388,
        288,
        224,
        180,
        157,
        128,
        104,
    ]  # Table 9 / 96
    stage2 = _compose(tmp_path, "experiment=bge_m3_stage2", *DATA)
    assert stage2.data.train_group_size == 8
    assert list(stage2.data.bucket_batch_sizes) == [48, 32, 20, 18, 14, 14, 12, 10, 8]  # Table 9 / 24
    assert dict(stage2.callbacks.stage_switch.schedule)[6000] == "unified_self_distill"
    assert stage2.loss.temperature == 0.02


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_preset_composes(tmp_path, trainer):
    cfg = _compose(tmp_path, f"trainer={trainer}")
    assert cfg.trainer.use_distributed_sampler is False  # the data module shards by rank itself


def test_loss_configs_equal_the_weight_presets(tmp_path):
    from m3lit.losses import M3LossWeights

    reference = _compose(tmp_path)
    assert M3LossWeights.coerce(dict(reference.loss.weights)) == M3LossWeights()
    v2 = _compose(tmp_path, "loss=paper_v2")
    assert M3LossWeights.coerce(dict(v2.loss.weights)) == M3LossWeights.paper_v2()


def test_resolved_config_has_no_interpolations(tmp_path):
    cfg = _compose(tmp_path, "seed=7")
    assert cfg.model.seed == 7 and cfg.data.seed == 7
    assert cfg.model.loss.temperature == cfg.loss.temperature


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("trainer.max_stepz=3", "trainer.max_stepz"),  # hydra: key not in struct
        ("model.optimizer.lrr=0.1", "model.optimizer.lrr"),
        ("trainer.max_steps=abc", "trainer.max_steps"),  # wrong type
        ("model.sub_batch_mode=gradcach", "model.sub_batch_mode"),  # not one of the Literal values
        ("model.stage=unifed", "model.stage"),
        ("model.stage={heads:[lexical]}", "model.stage: stage heads: unknown head"),
        ("model.stage={heads:[]}", "model.stage: a stage needs at least one head"),
        ("callbacks.stage_switch.schedule={0:{heads:[colbrt]}}", "entry 0: stage heads: unknown head"),
        ("model.scheduler.name=cosin", "model.scheduler.name"),
        ("model.net.colbert_dim=wide", "model.net.colbert_dim"),
        ("trainer.precision=17-mixed", "trainer.precision"),  # not one of the Literal values
        ("loss.temperature=hot", "loss.temperature"),
        ("loss.weights.sparce=0.2", "sparce"),
        ("callbacks.stage_switch.schedule={0:dense,10:unifed}", "unifed"),
        ("callbacks.stage_switch.schedule={5:dense}", "step 0"),
        ("seed=forty", "seed"),
        # keys a corpus replaced (m3lit.corpora.RETIRED_KEYS): the message names the new way
        ("bench.spec=full", "bench was removed; use a corpus block: corpus=bible"),
        ("+bench={spec:full}", "bench was removed"),
        ("data.demo=true", "data.demo was removed; use corpus=demo"),
        ("data.demo_dir=/x", "data.demo_dir was removed; use corpus.dir"),
    ],
)
def test_typos_and_wrong_types_fail_naming_the_key(tmp_path, override, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        _compose(tmp_path, override)


def test_typo_inside_a_yaml_file_fails(tmp_path):
    """Keys merged from YAML files are not covered by Hydra's struct check; the schema pass catches them."""
    extra = tmp_path / "extra" / "experiment"
    extra.mkdir(parents=True)
    (extra / "typo.yaml").write_text(
        "# @package _global_\ndefaults:\n  - demo\n  - _self_\ntrainer:\n  max_epoch: 3\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"trainer\.max_epoch: unknown option"):
        _compose(tmp_path / "run", f"hydra.searchpath=[file://{tmp_path / 'extra'}]", "experiment=typo")


def test_missing_data_for_a_scheduled_source_fails_at_start(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.train_data is not set"):
        _compose(tmp_path, "experiment=bge_m3_stage2")


def test_schedule_override_replaces_the_mapping(tmp_path):
    assert rewrite_overrides(["callbacks.stage_switch.schedule={0:unified}"]) == [
        "~callbacks.stage_switch.schedule",
        "+callbacks.stage_switch.schedule={0:unified}",
    ]
    cfg = _compose(tmp_path, "callbacks.stage_switch.schedule={0:unified,7:unified_self_distill}")
    assert dict(cfg.callbacks.stage_switch.schedule) == {0: "unified", 7: "unified_self_distill"}


OWN_GROUPS = ["train.yaml", "model", "loss", "callbacks", "logger", "trainer", "paths", "debug", "experiment",
              "corpus"]  # fmt: skip
_KEY = re.compile(r"^\s*[\w.+~-]+:")


def _own_yaml_files() -> list[Path]:
    files = []
    for entry in OWN_GROUPS:
        path = CONFIG_DIR / entry
        files += [path] if path.is_file() else sorted(path.glob("*.yaml"))
    return files


@pytest.mark.parametrize("path", _own_yaml_files(), ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_option_is_commented(path):
    """Every option (a key with a value) in the training configs has a comment beside it.

    Keys that only open a nested block (``trainer:`` in an experiment) are exempt, their leaves are not;
    so are the step rows of a stage schedule (the ``schedule:`` key above them carries the comment).
    """
    exempt = {
        "defaults",
        "_target_",
        "hydra",
        "run",
        "sweep",
        "job",
        "subdir",
        "dir",
        "chdir",
        "path",
        "module_classes",
    }
    undocumented = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not _KEY.match(line) or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition(":")
        if key.strip() in exempt or key.strip().isdigit() or "#" in line or not value.strip():
            continue
        undocumented.append(f"{path.name}:{number}: {line.strip()}")
    assert not undocumented, "options without a comment:\n" + "\n".join(undocumented)
