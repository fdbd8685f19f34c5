"""The one preparation hook: ``corpus.prepare`` names it, ``prepare_corpus`` runs it, it fills only unset keys."""

from __future__ import annotations

import re

import pytest
from test_demo import MODULES

from m3lit.config.compose import ConfigError, compose
from m3lit.config.corpus import corpus_hook, prepare_corpus
from m3lit.corpora.demo.build import build_demo
from m3lit.corpora.prepare import corpus_options, fill
from m3lit.files.errors import UsageError


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """A small finished demo corpus: the hook reuses it (``corpus.dir``) instead of walking the stdlib."""
    return build_demo(
        tmp_path_factory.mktemp("corpus") / "demo", modules=MODULES, num_test=40, vocab_size=700
    )


def _demo(tmp_path, demo, *overrides):
    return compose([f"hydra.run.dir={tmp_path}", "experiment=demo", f"corpus.dir={demo.root}", *overrides])


def test_the_demo_hook_fills_every_unset_path(tmp_path, demo_dir):
    cfg = _demo(tmp_path, demo_dir, "callbacks=with_retrieval")
    assert cfg.data.train_data is None and cfg.model.net.tokenizer is None  # nothing filled at compose time
    prepare_corpus(cfg)
    assert cfg.data.train_data == str(demo_dir.train)
    assert cfg.data.pairs_data == str(demo_dir.pairs)
    assert cfg.model.net.tokenizer == str(demo_dir.tokenizer_dir)  # a random encoder reads the corpus's
    assert cfg.evaluate.dataset_dir == str(demo_dir.eval_dir)
    # configs/callbacks/retrieval_metrics.yaml: data_dir: ${evaluate.dataset_dir}, resolved before the hook ran
    assert cfg.callbacks.retrieval_metrics.data_dir == str(demo_dir.eval_dir)


def test_the_demo_hook_keeps_what_the_user_set(tmp_path, demo_dir):
    given = {"data.train_data": str(tmp_path / "mine.jsonl"), "model.net.tokenizer": str(tmp_path / "tok")}
    cfg = _demo(tmp_path, demo_dir, *(f"{k}={v}" for k, v in given.items()), f"evaluate.suite={tmp_path}")
    prepare_corpus(cfg)
    assert (cfg.data.train_data, cfg.model.net.tokenizer) == tuple(given.values())
    assert cfg.data.pairs_data == str(demo_dir.pairs)  # the one left unset is filled
    assert cfg.evaluate.dataset_dir is None and cfg.evaluate.suite == str(tmp_path)  # a suite: no split
    pretrained = _demo(tmp_path, demo_dir, "model.net.name_or_path=some/model")
    prepare_corpus(pretrained)
    assert pretrained.model.net.tokenizer is None  # a pretrained model brings its own tokenizer


def test_without_a_corpus_nothing_is_filled(tmp_path):
    cfg = compose([f"hydra.run.dir={tmp_path}", "experiment=bge_m3_finetune", "data.train_data=x.jsonl"])
    assert cfg.get("corpus") is None
    before = dict(cfg)
    assert prepare_corpus(cfg) is None
    assert dict(cfg) == before


def test_an_unknown_hook_is_one_clear_error(tmp_path, demo_dir):
    for path, needle in [
        ("m3lit.corpora.nope.prepare", "corpus.prepare='m3lit.corpora.nope.prepare': cannot import it"),
        (
            "m3lit.corpora.demo.prepare.nothing",
            "corpus.prepare='m3lit.corpora.demo.prepare.nothing': cannot import",
        ),
        ("m3lit.corpora.demo.prepare.OPTIONS", "not a function"),
        ("nodots", "name the corpus's preparation hook as package.module.function"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            _demo(tmp_path, demo_dir, f"corpus.prepare={path}")  # at compose time, before any run folder
        with pytest.raises(ConfigError, match=re.escape(needle)):
            corpus_hook(path)
    assert corpus_hook("m3lit.corpora.demo.prepare.prepare_demo").__name__ == "prepare_demo"


def test_a_corpus_checks_its_own_options(tmp_path, demo_dir):
    with pytest.raises(UsageError, match=r"^corpus\.dri: unknown option; valid options: \['dir'\]$"):
        prepare_corpus(_demo(tmp_path, demo_dir, "+corpus.dri=x"))
    bible = [f"hydra.run.dir={tmp_path}", "experiment=bible_compact"]
    with pytest.raises(UsageError, match=r"^corpus\.spec='huge': choose one of \['compact', 'full'\]$"):
        prepare_corpus(compose([*bible, "corpus.spec=huge"]))  # before anything is built
    with pytest.raises(UsageError, match=r"^corpus\.mine='yes': expected a bool like the default True$"):
        prepare_corpus(compose([*bible, "corpus.mine=yes"]))


def test_a_retired_key_in_a_yaml_file_names_the_new_way(tmp_path):
    extra = tmp_path / "extra" / "experiment"
    extra.mkdir(parents=True)
    (extra / "old.yaml").write_text(
        "# @package _global_\ndefaults:\n  - bible_compact\n  - _self_\nbench:\n  spec: full\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"^bench: this key was removed; use a corpus block: corpus=bible"):
        compose(
            [
                f"hydra.run.dir={tmp_path / 'run'}",
                f"hydra.searchpath=[file://{tmp_path / 'extra'}]",
                "experiment=old",
            ]
        )


def test_fill_sets_only_unset_keys(tmp_path):
    cfg = compose([f"hydra.run.dir={tmp_path}", "experiment=bge_m3_finetune", "data.train_data=x.jsonl"])
    assert not fill(cfg, "data.train_data", "y.jsonl") and cfg.data.train_data == "x.jsonl"
    assert fill(cfg, "data.pairs_data", ["a.jsonl"]) and list(cfg.data.pairs_data) == ["a.jsonl"]
    assert fill(cfg, "evaluate.suite", "s") and cfg.evaluate.suite == "s"


def test_corpus_options_follow_the_default_types(tmp_path):
    cfg = compose([f"hydra.run.dir={tmp_path}", "experiment=bible_compact"])
    from m3lit.corpora.bible.prepare import OPTIONS

    defaults = {**OPTIONS, "spec": "full", "mine": False}
    filters_off = {"max_score": None, "absolute_margin": None, "relative_margin": None}
    assert corpus_options(cfg, defaults) == {
        "spec": "compact", "mine": True, "stage2": ["xref", "xling"], "mine_candidates": "dense",
        "mine_filter": filters_off,
    }  # fmt: skip
    cfg.corpus.mine = "yes"
    with pytest.raises(UsageError, match=r"corpus\.mine='yes': expected a bool like the default False"):
        corpus_options(cfg, defaults)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "corpus.mine_filter.relative_margin=1.5",
            r"^corpus\.mine_filter\.relative_margin must lie in \[0, 1\)",
        ),
        ("+corpus.mine_filter.margin=0.1", r"^corpus\.mine_filter: unknown filter\(s\) \['margin'\]"),
        ("corpus.mine_candidates=bm25", r"^corpus\.mine_candidates='bm25': choose one of dense, sparse, all"),
    ],
)
def test_bad_mining_filters_stop_before_the_benchmark_is_built(tmp_path, override, message):
    from m3lit.corpora.bible.prepare import prepare_bible

    cfg = compose([f"hydra.run.dir={tmp_path}", "experiment=bible_compact", override])
    with pytest.raises(UsageError, match=message):
        prepare_bible(cfg)
