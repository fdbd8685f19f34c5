"""Values that can be checked from the config stop a command before any work (issue 30, items 4, 6, 7).

Each case runs a command's ``main(argv)`` as its ``__main__`` guard does, all in ONE driver subprocess
(:func:`test_cli_errors.run_driver`: starting Python with torch costs seconds on this machine), and asserts:
the exit status (2 for a bad option or value, 1 for a missing input), exactly one ``error:`` line naming
the problem, no traceback, and no run folder or output folder left behind. The models the cases name
are folders whose weights cannot load (or no model at all), so a check that came after the model load
would end with another error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_cli_errors import _without, run_driver
from train_utils import tiny_corpus, tiny_run_overrides

from m3lit.model import M3Model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_config, tokenizer):
    """A tiny corpus, a model folder with garbage weights, and a folder with a results.json."""
    root = tmp_path_factory.mktemp("cli_validation")
    corpus = tiny_corpus(root / "corpus", tokenizer)
    torch.manual_seed(0)
    model = Path(M3Model.from_config(tiny_config, tokenizer, colbert_dim=16).save_pretrained(root / "model"))
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((model / "config.json").read_bytes())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    (root / "evaluated").mkdir()
    (root / "evaluated" / "results.json").write_text("{}\n", encoding="utf-8")
    return {"root": root, "corpus": corpus, "broken": str(broken)}


def _train_cases(root: Path, corpus) -> list[tuple[str, list[str], int, list[str]]]:
    """(name, overrides after the tiny run's, exit status, needles of the error line)."""
    return [
        ("max_steps=0", ["trainer.max_steps=0"], 2, ["trainer.max_steps", "got 0"]),
        ("lora unknown option", ["model.net.lora={rank:8}"], 2, ["model.net.lora", "'rank'", "'r'"]),
        ("lora target typo", ["model.net.lora={target_modules:[qeury]}"], 2,
         ["model.net.lora.target_modules", "'qeury'", "'query'"]),
        ("lora r=0", ["model.net.lora={r:0}"], 2, ["model.net.lora.r", "got 0"]),
        ("negative small_threshold", ["data.small_threshold=-5"], 2, ["data.small_threshold", "got -5"]),
        ("drop_threshold alone", ["data.drop_threshold=200"], 2,
         ["data.drop_threshold=200 does nothing without data.small_threshold"]),
        ("schedule source typo", ["callbacks.stage_switch.schedule={0:{stage:dense,source:labeled}}"], 2,
         ["unknown data source 'labeled'", "did you mean 'labelled'"]),
        ("misspelt data key", ["data.small_treshold=50"], 2,
         ["unknown config key 'data.small_treshold'", "did you mean 'data.small_threshold'"]),
        ("misspelt resume", ["resum=/tmp/x"], 2, ["unknown config key 'resum'", "did you mean 'resume'"]),
        ("bad choice", ["model.sub_batch_mode=gradcach"], 2,
         ["model.sub_batch_mode=gradcach", "did you mean 'gradcache'", "'split', 'gradcache'"]),
        ("used table of the wrong length", ["data.bucket_edges=[100]", "data.bucket_batch_sizes=[4]"], 2,
         ["data.bucket_batch_sizes (source 'labelled') needs len(data.bucket_edges) + 1 = 2 entries"]),
    ]  # fmt: skip


def _other_cases(inputs) -> list[tuple[str, str, list[str], int, list[str]]]:
    """(module, name, argv, exit status, needles) of the other commands."""
    root, broken, beir = inputs["root"], inputs["broken"], inputs["corpus"]["eval"]
    out = f"output_dir={root / 'eval_out'}"
    evaluate = [f"model={broken}", f"data={beir}", out]
    return [
        ("m3lit.evaluate", "mode typo", [*evaluate, "modes=[dense,sparce]"], 2,
         ["unknown retrieval mode(s) ['sparce']", "did you mean 'sparse'"]),
        ("m3lit.evaluate", "metric typo", [*evaluate, "metrics=[ndcg@10,recal@100]"], 2,
         ["unknown metric 'recal@100'", "did you mean 'recall@100'"]),
        ("m3lit.evaluate", "window too small", [*evaluate, "retrieval.passage_window=2"], 2,
         ["retrieval.passage_window must be >= 3"]),
        ("m3lit.evaluate", "misspelt option", [*evaluate, "metric=[ndcg@10]"], 2,
         ["unknown option 'metric'", "did you mean 'metrics'"]),
        ("m3lit.train", "missing resume folder", [f"resume={root / 'no_run'}"], 1,
         ["resume=", "no_run", "no config.yaml"]),
        ("m3lit.compare", "unknown mode", [f"run={root / 'evaluated'}", "a=al"], 2,
         ["a=al: unknown mode 'al'", "did you mean 'all'"]),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def outcomes(inputs):
    """Every case in one driver process: ``{name: (status, needles, result, folder that must not exist)}``."""
    root, corpus = inputs["root"], inputs["corpus"]
    cases = []
    for i, (name, extra, code, needles) in enumerate(_train_cases(root, corpus)):
        run = root / f"run{i}"
        cases.append(("m3lit.train", name, [*tiny_run_overrides(corpus, run), *extra], code, needles, run))
    for module, name, argv, code, needles in _other_cases(inputs):
        cases.append((module, name, argv, code, needles, root / "eval_out"))
    results = run_driver(root, [{"module": m, "argv": argv, "env": {}} for m, _, argv, _, _, _ in cases])
    return {
        name: (code, needles, result, folder)
        for (_, name, _, code, needles, folder), result in zip(cases, results, strict=True)
    }


def _names() -> list[str]:
    fake = {"root": Path("/r"), "broken": "/b", "corpus": {"eval": "/e"}}
    return [c[0] for c in _train_cases(Path("/r"), {})] + [c[1] for c in _other_cases(fake)]


@pytest.mark.parametrize("name", _names())
def test_a_bad_value_is_one_error_line_before_any_work(outcomes, name):
    code, needles, result, folder = outcomes[name]
    stderr = result["stderr"]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert result["status"] == code, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len([line for line in lines if line.startswith("error:")]) == 1, stderr[-3000:]
    assert lines[-1].startswith("error: "), stderr[-3000:]
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    assert "To append" not in stderr and "+data." not in stderr and "not in struct" not in stderr
    assert not folder.exists(), f"{folder} was created before the error"


def test_a_single_bucket_run_of_one_source_ignores_the_other_sources_table(inputs, tmp_path):
    """``data.pairs_bucket_batch_sizes`` (a table of a source the run does not read) is not checked, and
    the error about a used table never quotes it; ``experiment=demo`` reads both sources."""
    from m3lit.config.compose import ConfigError, compose

    corpus = inputs["corpus"]
    base = [
        *_without(tiny_run_overrides(corpus, tmp_path / "run"), "data.pairs_data"),
        "callbacks.stage_switch.schedule={0:{stage:unified,source:labelled}}",
        "data.pairs_bucket_batch_sizes=[700,600,500,400,300,200,100,50,25]",
        "data.bucket_edges=[]",
    ]
    cfg = compose([*base, "data.bucket_batch_sizes=[4]"])
    assert list(cfg.data.bucket_batch_sizes) == [4]
    with pytest.raises(ConfigError) as error:
        compose([*base, "data.bucket_batch_sizes=[4,4]"])
    assert "data.bucket_batch_sizes" in str(error.value) and "700" not in str(error.value)
    with pytest.raises(ConfigError, match="data.pairs_bucket_batch_sizes"):  # both sources read: checked
        compose([*tiny_run_overrides(corpus, tmp_path / "run"), "data.bucket_edges=[]", "data.bucket_batch_sizes=[4]",
                 "data.pairs_bucket_batch_sizes=[700,600]"])  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_evaluate_help_prints_its_examples_on_their_own_lines():
    """The module docstring's continued example lines keep their backslash and line break (item 7)."""
    from m3lit.evaluate import _help

    text = _help()
    assert "retrieval.pooling=mean \\\n        retrieval.query_prefix" in text
    assert "output_dir=OUT \\\n        reference=" in text
    assert "mean         retrieval" not in text
