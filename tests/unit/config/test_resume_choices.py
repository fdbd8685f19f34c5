"""A resume accepts the run's own command (issue 30, item 8) and refuses each change in its own sentence
with the hint that fits the key (item 7); a missing run folder is a missing input (exit status 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from train_utils import tiny_run_overrides

from m3lit.config.checks import ConfigError
from m3lit.config.compose import compose, save_config
from m3lit.config.resume import parse_resume_args, resume_config
from m3lit.files.errors import PathError

#: The group choices Hydra records for ``experiment=demo ~corpus ~logger`` (``--cfg hydra``: deleted groups
#: are absent).
CHOICES = {"debug": None, "experiment": "demo", "paths": "default", "trainer": "cpu", "callbacks": "default",
           "loss": "m3", "data": "demo", "model": "tiny", "hydra/env": "default"}  # fmt: skip


@pytest.fixture
def run(tmp_path) -> tuple[Path, list[str]]:
    """A run folder as ``python -m m3lit.train`` leaves it (config.yaml, .hydra/hydra.yaml, last.ckpt) and the
    command that made it."""
    corpus = {k: str(tmp_path / k) for k in ("train", "pairs", "eval", "tokenizer")}
    folder = tmp_path / "run"
    command = [*tiny_run_overrides(corpus, folder), "trainer.max_steps=12"]
    save_config(compose(command), folder)
    (folder / ".hydra").mkdir()
    OmegaConf.save({"hydra": {"runtime": {"choices": CHOICES}}}, folder / ".hydra" / "hydra.yaml")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"")
    return folder, command


def _resume(folder: Path, *args: str):
    return resume_config(parse_resume_args([*args, f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}"]))


def test_the_runs_own_command_with_ckpt_path_resumes(run):
    folder, command = run
    cfg = _resume(folder, *command)
    assert cfg.trainer.max_steps == 12 and cfg.ckpt_path == str(folder / "checkpoints" / "last.ckpt")
    saved = OmegaConf.load(folder / "config.yaml")
    assert OmegaConf.to_container(cfg.data) == OmegaConf.to_container(saved.data)


def test_a_differing_group_choice_is_named_with_both_values(run):
    folder, command = run
    with pytest.raises(ConfigError) as error:
        _resume(folder, *command, "trainer=gpu")
    message = str(error.value)
    assert "trainer=gpu" in message and "the run was composed with trainer=cpu" in message, message
    assert "experiment" not in message


def test_each_refused_key_is_one_sentence_with_its_own_hint(run):
    folder, _ = run
    with pytest.raises(ConfigError) as error:
        _resume(folder, "seed=1", "trainer.max_steps=20")
    sentences = [s for s in str(error.value).split("). ") if s]
    assert len(sentences) == 2 and "\n" not in str(error.value), str(error.value)
    seed = next(s for s in sentences if "seed: saved 42, now 1" in s)
    steps = next(s for s in sentences if "trainer.max_steps: saved 12, now 20" in s)
    assert "allow_schedule_change" not in seed and "model.net.name_or_path=" in seed
    assert "resume.allow_schedule_change=true" in steps


def test_a_missing_run_folder_is_a_missing_input(tmp_path):
    with pytest.raises(PathError) as error:
        parse_resume_args([f"resume={tmp_path / 'nope'}"])
    assert error.value.exit_code == 1 and "no config.yaml" in str(error.value)
