"""Where m3lit keeps derived files (corpora, real-model folders, mined negatives): ``$M3LIT_CACHE`` or ``.cache/m3lit``.

Every builder goes through :func:`cached_build`: a folder whose ``manifest.json`` records the same settings
is reused; otherwise the build writes into a hidden temporary sibling of the output folder, which is renamed
into place only when the build has finished (:func:`atomic_build`), so an interrupted or failed build leaves
nothing half-made in the cache, and a folder that exists is complete. The manifest holds the settings, what
the builder adds (sizes, sources), and the sha256 of every file (``sha256``) with their overall ``hash``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST", "cache_root", "atomic_build", "cached_build", "read_manifest", "sha256_file"]

#: The file every finished build holds: its settings, sizes and file hashes.
MANIFEST = "manifest.json"


def cache_root() -> Path:
    """``$M3LIT_CACHE`` if set, else ``.cache/m3lit`` under the repository (editable install) or the cwd."""
    env = os.environ.get("M3LIT_CACHE")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    base = repo if (repo / "pyproject.toml").exists() else Path.cwd()
    return base / ".cache" / "m3lit"


@contextmanager
def atomic_build(out: Path, *, force: bool = False, marker: str = MANIFEST) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``out``; on success it becomes ``out`` by one rename.

    Args:
        out: the final folder. Its parent is created.
        force: replace an existing ``out`` (only after the new build succeeded).
        marker: a file every finished build holds; if another process renamed its finished build into
            place first, that one is kept.

    On any exception the temporary folder is removed and ``out`` is left as it was.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        yield tmp
        if force and out.exists():
            shutil.rmtree(out)
        try:
            os.rename(tmp, out)
        except OSError:  # another process finished the same build first: keep theirs
            if not (out / marker).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte pieces (wheels and databases are 100+ MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(out: str | os.PathLike) -> dict[str, Any]:
    """The ``manifest.json`` of the finished build in ``out``."""
    return json.loads((Path(out) / MANIFEST).read_text(encoding="utf-8"))


def cached_build(
    out: str | os.PathLike,
    settings: Mapping[str, Any],
    build: Callable[[Path], Mapping[str, Any]],
    *,
    force: bool = False,
    files: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Reuse the finished build in ``out`` if it was made with ``settings``; else build it atomically.

    Args:
        out: the build's folder (its parent is created).
        settings: what the build depends on, recorded at the top of the manifest (JSON values). A finished
            folder is reused when its manifest holds every one of them with the same value (a mapping is
            compared key by key, so ``{"sizes": {"queries": 500}}`` checks one size).
        build: ``build(tmp)`` writes the files into the empty folder ``tmp`` and returns further manifest
            entries (sizes, sources); it runs only when the folder is rebuilt.
        force: rebuild even when the folder is reusable.
        files: the files (relative, ``/``-separated) whose sha256 the manifest records; None = every file.

    Returns:
        the manifest of the finished folder: ``{**settings, **build(tmp), "sha256": {file: hex}, "hash": hex}``
        (``hash``: the sha256 of the sorted ``sha256`` mapping). A folder built with other settings is
        replaced only once the new build has succeeded; on any error ``out`` stays as it was.
    """
    out = Path(out)
    settings = json.loads(json.dumps(settings))  # tuples -> lists: compared as the manifest reads back
    if not force and (out / MANIFEST).is_file():
        if _holds(read_manifest(out), settings):
            return read_manifest(out)
        print(f"{out} was built with other settings: rebuilding it", file=sys.stderr, flush=True)
        force = True  # the old folder is replaced only once the new build has succeeded
    with atomic_build(out, force=force) as tmp:
        entries = dict(build(tmp))
        names = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        digests = {name: sha256_file(tmp / name) for name in (names if files is None else files)}
        manifest = {
            **settings,
            **entries,
            "sha256": digests,
            "hash": hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest(),
        }
        (tmp / MANIFEST).write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return read_manifest(out)  # ours, or the same build another process renamed into place first


def _holds(manifest: Any, settings: Any) -> bool:
    """Does ``manifest`` record every value of ``settings`` (mappings compared key by key)?"""
    if isinstance(settings, Mapping):
        return isinstance(manifest, Mapping) and all(
            key in manifest and _holds(manifest[key], value) for key, value in settings.items()
        )
    return manifest == settings
