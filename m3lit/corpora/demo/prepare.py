"""The demo corpus's preparation hook (``configs/corpus/demo.yaml``): build the corpus, fill the run's paths.

``experiment=demo`` selects ``corpus: demo``::

    corpus:
      prepare: m3lit.corpora.demo.prepare.prepare_demo
      dir: null     # corpus folder; null = <cache>/demo-py<X.Y>-v<version> (m3lit.corpora.demo.build)

:func:`prepare_demo` builds the corpus (once: :func:`~m3lit.corpora.demo.build.build_demo` reuses a finished
folder) and fills every unset key it owns: ``data.train_data`` (stage-2 lines with BM25 negatives),
``data.pairs_data`` (stage-1 pairs), ``model.net.tokenizer`` for a random encoder (``model.net.name_or_path``
null: the corpus's own tokenizer) and ``evaluate.dataset_dir`` (the held-out split, unless ``evaluate.suite``
is set).
"""

from __future__ import annotations

from omegaconf import DictConfig

from m3lit.corpora.prepare import corpus_options, fill, is_unset

__all__ = ["prepare_demo"]

#: The corpus's own options and their defaults (configs/corpus/demo.yaml documents them).
OPTIONS = {"dir": None}


def prepare_demo(cfg: DictConfig) -> None:
    """Build (or reuse) the demo corpus and fill ``cfg``'s unset data, tokenizer and evaluation paths."""
    from m3lit.corpora.demo.build import build_demo

    options = corpus_options(cfg, OPTIONS)
    paths = build_demo(options["dir"])
    fill(cfg, "data.train_data", str(paths.train))
    fill(cfg, "data.pairs_data", str(paths.pairs))
    if is_unset(cfg.model.net.get("name_or_path")):  # a random encoder reads the corpus's tokenizer
        fill(cfg, "model.net.tokenizer", str(paths.tokenizer_dir))
    if is_unset(cfg.evaluate.get("suite")):
        fill(cfg, "evaluate.dataset_dir", str(paths.eval_dir))
