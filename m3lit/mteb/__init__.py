"""m3lit inside mteb (``pip install m3lit[mteb]``): every BGE-M3 retrieval mode as an mteb model.

- :mod:`m3lit.mteb.search`: :class:`M3Search`, one model behind mteb's search interface (the corpus indexed
  once, every mode ranked with m3lit's retrieval code, as ``python -m m3lit.evaluate`` ranks it).
- :mod:`m3lit.mteb.model`: :class:`M3MtebModel`, one mode as mteb's encoder + search model, its
  ``ModelMeta``; :func:`mteb_models` builds one per mode from any m3lit model reference.
- :mod:`m3lit.mteb.tasks`: :func:`beir_task`, a local BEIR folder as an mteb retrieval task.
- :mod:`m3lit.mteb.results`: the task-by-mode loop over ``mteb.evaluate`` and m3lit's tables of its scores.
- :mod:`m3lit.mteb.command`: ``python -m m3lit.mteb`` (options in ``configs/mteb.yaml``).

::

    import mteb
    from m3lit.mteb import mteb_models

    models = mteb_models("runs/x/export", modes=["dense", "all"], retrieval={"all_weights": [1, 0.3, 1]})
    for mode, model in models.items():
        mteb.evaluate(model, mteb.get_tasks(tasks=["SciFact"]))

The names load lazily, so ``import m3lit.mteb`` does not import mteb.
"""

from __future__ import annotations

import importlib

__all__ = ["M3MtebModel", "M3Search", "beir_task", "mteb_models"]

_HOMES = {
    "M3MtebModel": "m3lit.mteb.model",
    "mteb_models": "m3lit.mteb.model",
    "M3Search": "m3lit.mteb.search",
    "beir_task": "m3lit.mteb.tasks",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'm3lit.mteb' has no attribute {name!r}")
