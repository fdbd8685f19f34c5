"""The one caller of a corpus's preparation hook: ``corpus.prepare`` names it, :func:`prepare_corpus` runs it.

A corpus is a folder of ``m3lit/corpora/`` and a config ``configs/corpus/<name>.yaml`` (selected with
``corpus=<name>`` or an experiment's ``override /corpus: <name>``; ``corpus: null`` by default)::

    corpus:
      prepare: m3lit.corpora.<name>.prepare.<function>   # the hook: a dotted path, imported by name
      ...                                                # the corpus's own options (checked by its hook)

:func:`m3lit.train.train` calls :func:`prepare_corpus` before anything is instantiated (and before seeding):
the hook builds or reuses the corpus's files and fills the keys it owns that are unset (data, tokenizer,
evaluation paths: :mod:`m3lit.corpora.prepare`). The hook is found by its dotted path, never imported here
by name, so the training core runs with ``m3lit/corpora/`` deleted. Until the hook has run, the paths a
corpus fills are not required (:mod:`m3lit.config.checks`, :mod:`m3lit.config.paths`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, open_dict

from m3lit.config.checks import ConfigError, import_object

__all__ = ["check_retired_keys", "check_retired_overrides", "corpus_hook", "prepare_corpus"]


def corpus_hook(path: Any) -> Callable[[DictConfig], Any]:
    """The function that ``corpus.prepare`` names (``package.module.function``).

    Raises:
        ConfigError: ``corpus.prepare`` is unset, not a dotted path, or names nothing importable or callable.
    """
    if not isinstance(path, str) or "." not in path:
        raise ConfigError(
            f"corpus.prepare={path!r}: name the corpus's preparation hook as package.module.function "
            "(configs/corpus/<name>.yaml)"
        )
    try:
        hook = import_object(path)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"corpus.prepare={path!r}: cannot import it ({error})") from None
    if not callable(hook):
        raise ConfigError(f"corpus.prepare={path!r}: not a function")
    return hook


def prepare_corpus(cfg: DictConfig) -> Any:
    """Run the hook of ``cfg.corpus`` on ``cfg`` (a no-op without a corpus); return what the hook returns.

    ``configs/callbacks/retrieval_metrics.yaml`` sets ``data_dir: ${evaluate.dataset_dir}``, which was
    resolved when the config was composed, before the hook filled ``evaluate.dataset_dir``: a callback's
    ``data_dir`` left null follows the filled folder.
    """
    corpus = cfg.get("corpus")
    if not corpus:
        return None
    hook = corpus_hook(corpus.get("prepare"))
    with open_dict(cfg):
        result = hook(cfg)
        folder = cfg.evaluate.get("dataset_dir")
        for node in (cfg.get("callbacks") or {}).values():
            if folder and node is not None and "data_dir" in node and node.data_dir is None:
                node.data_dir = folder
    return result


def _retired() -> Mapping[str, str]:
    """Config keys the installed corpora replaced -> the new way (none when ``m3lit.corpora`` is absent)."""
    try:
        return importlib.import_module("m3lit.corpora").RETIRED_KEYS
    except (ImportError, AttributeError):
        return {}


def check_retired_keys(data: Mapping) -> None:
    """Raise :class:`ConfigError` naming the new way for a retired key in the composed config ``data``."""
    for key, new in _retired().items():
        node: Any = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) and part in node else _MISSING
        if node is not _MISSING:
            raise ConfigError(f"{key}: this key was removed; use {new}")


def check_retired_overrides(overrides: Iterable[str]) -> None:
    """Raise :class:`ConfigError` naming the new way for a command-line override of a retired key."""
    retired = _retired()
    for item in overrides:
        key = item.lstrip("~+").partition("=")[0]
        for old, new in retired.items():
            if key == old or key.startswith(f"{old}."):
                raise ConfigError(f"{item}: {old} was removed; use {new}")


_MISSING = object()
