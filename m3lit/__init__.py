"""m3lit: train BGE-M3-style dense + sparse + multi-vector text embedders with PyTorch Lightning."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from m3lit.model.reference import register_named_models

__version__ = "0.1.0"

# Heavy modules are imported on first use, so `import m3lit` stays cheap for command-line tools.
_LAZY = {
    "M3Model": "m3lit.model",
    "M3Output": "m3lit.model",
    "M3Embedder": "m3lit.inference.embedder",
    "BGEM3FlagModel": "m3lit.inference.embedder",  # FlagEmbedding's name for the same class
    "M3LitModule": "m3lit.training.lit_module",
    "M3DataModule": "m3lit.data.datamodule",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'm3lit' has no attribute {name!r}")


def _pinned_wheel_models() -> dict:
    """``m3lit:NAME`` models built from pinned wheels (:mod:`m3lit.sources`); none where that package is absent.

    Registered here, at the top, so that the model layer never imports :mod:`m3lit.sources`: a fork may
    delete it and the training core still runs (tests/integration/test_core_alone.py).
    """
    try:
        from m3lit.sources import BUILDERS
    except ModuleNotFoundError as error:
        if error.name != "m3lit.sources":
            raise
        return {}
    return BUILDERS


register_named_models(_pinned_wheel_models)
