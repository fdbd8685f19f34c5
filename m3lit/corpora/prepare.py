"""What every corpus's preparation hook uses: read its own options, fill the paths it owns when unset.

A corpus is a folder of :mod:`m3lit.corpora` plus a config ``configs/corpus/<name>.yaml`` whose ``prepare``
names its hook, e.g. ``m3lit.corpora.demo.prepare.prepare_demo``. :func:`m3lit.config.corpus.prepare_corpus`
calls ``hook(cfg)`` on the composed config before anything is instantiated; the hook builds (or reuses) its
files and fills the keys it owns that the user left unset, so the saved ``config.yaml`` names concrete files::

    def prepare_mine(cfg):
        options = corpus_options(cfg, {"dir": None})       # corpus.<key>: checked here, one-line errors
        root = build_mine(options["dir"])                   # cached: m3lit.files.cache.cached_build
        fill(cfg, "data.train_data", str(root / "train.jsonl"))
        fill(cfg, "evaluate.dataset_dir", str(root / "eval"))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from m3lit.files.errors import UsageError

__all__ = ["corpus_options", "fill", "is_unset"]

#: The key of a corpus block that names its hook (every corpus has it; not one of its own options).
HOOK_KEY = "prepare"


def corpus_options(cfg: DictConfig, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The ``corpus`` block's own options over ``defaults`` (every option the corpus knows, with its default).

    A value must have its default's type (a bool for a bool, a list for a list; any value for a None default).

    Raises:
        UsageError: ``corpus.<key>: ...`` for an unknown option or a value of the wrong type.
    """
    given = OmegaConf.to_container(cfg.corpus, resolve=True)
    options = dict(defaults)
    for key, value in given.items():
        if key == HOOK_KEY:
            continue
        if key not in defaults:
            raise UsageError(f"corpus.{key}: unknown option; valid options: {sorted(defaults)}")
        default = defaults[key]
        if default is not None and value is not None and not _same_kind(value, default):
            raise UsageError(
                f"corpus.{key}={value!r}: expected a {type(default).__name__} like the default {default!r}"
            )
        options[key] = value
    return options


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, list | tuple):
        return isinstance(value, list | tuple)
    return isinstance(value, type(default))


def is_unset(value: Any) -> bool:
    """None, an empty string or an empty list: a path the user left for the corpus to fill."""
    return value is None or (isinstance(value, str | list | tuple) and len(value) == 0)


def fill(cfg: DictConfig, key: str, value: Any) -> bool:
    """Set the dotted ``key`` of ``cfg`` to ``value`` unless the user set it (:func:`is_unset`).

    Returns:
        whether ``key`` was filled.
    """
    if not is_unset(OmegaConf.select(cfg, key, default=None)):
        return False
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    return True
